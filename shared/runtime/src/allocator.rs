//! The allocator of the services whose consumers move many small messages through SQLite:
//! `provenant-ingest`, `provenant-validate` and `provenant-settle`, and the benchmarks that run
//! their consumers in-process (`settle-bench`, `datanet-bench`), so that those time what the
//! services run. Each binary declares it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: provenant_runtime::allocator::ServiceAllocator = provenant_runtime::allocator::SERVICE_ALLOCATOR;
//! ```
//!
//! Why mimalloc: glibc's malloc and free (and waits on its arena locks) took about a quarter of
//! `settle-bench`'s CPU, since every message, envelope and statement allocates, from several
//! threads at once. With mimalloc, `settle-bench` settled about 1.19× as many events a second
//! and `datanet-bench` accepted about 1.15× as many contributions (README, "Benchmarks").
//! SQLite keeps glibc's malloc (routing it to mimalloc too gained nothing measurable).
//! `provenant up` keeps glibc's allocator: it also trains and serves models, whose allocator
//! settings (`GLIBC_TUNABLES`) were measured under glibc.

pub type ServiceAllocator = mimalloc::MiMalloc;

pub const SERVICE_ALLOCATOR: ServiceAllocator = mimalloc::MiMalloc;
