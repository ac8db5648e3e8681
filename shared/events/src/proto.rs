//! Types generated from `schemas/` by `cargo xtask codegen` (committed; `make lint` checks
//! they are current). Modules mirror the protobuf packages so cross-package paths resolve.

#![allow(clippy::all, clippy::pedantic, reason = "generated code")]
#![allow(missing_docs, reason = "generated code")]

pub mod common {
    pub mod v1 {
        include!("generated/provenant.common.v1.rs");
    }
}

pub mod datanet {
    pub mod v1 {
        include!("generated/provenant.datanet.v1.rs");
    }
}

pub mod training {
    pub mod v1 {
        include!("generated/provenant.training.v1.rs");
    }
}

pub mod inference {
    pub mod v1 {
        include!("generated/provenant.inference.v1.rs");
    }
}

pub mod settlement {
    pub mod v1 {
        include!("generated/provenant.settlement.v1.rs");
    }
}

pub mod identity {
    pub mod v1 {
        include!("generated/provenant.identity.v1.rs");
    }
}

pub mod lineage {
    pub mod v1 {
        include!("generated/provenant.lineage.v1.rs");
    }
}
