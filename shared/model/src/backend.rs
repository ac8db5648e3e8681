//! Which Burn backend runs the model.
//!
//! Burn 0.22 has no backend type parameter on tensors or modules: a [`Device`] carries the
//! backend (Flex, NdArray, CUDA, wgpu…) and, with `.autodiff()`, whether operations are
//! recorded for backpropagation. So where Burn 0.21 code wrote `type TrainingBackend =
//! Autodiff<NdArray>`, this crate hands out devices: [`training_device`] is the autodiff
//! flavour of [`inference_device`].
//!
//! The cargo features `flex` (default), `ndarray`, `cuda` and `wgpu` compile the matching
//! backend in. When several are compiled, [`inference_device`] prefers a GPU, then Flex, then
//! NdArray; Burn's `BURN_DEVICE` environment variable is not consulted, so tests on a laptop
//! with a CUDA build still know what they run on when they ask for [`Backend::Flex`].

pub use burn::tensor::Device;

/// A backend this build can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (feature `flex`, the default).
    #[cfg(feature = "flex")]
    Flex,
    /// The ndarray CPU backend (feature `ndarray`; deprecated upstream, slower than Flex).
    #[cfg(feature = "ndarray")]
    NdArray,
    /// The first CUDA GPU (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda,
    /// wgpu on the platform's default adapter (feature `wgpu`).
    #[cfg(feature = "wgpu")]
    Wgpu,
}

impl Backend {
    /// Every backend compiled into this build, in order of preference.
    pub fn available() -> Vec<Backend> {
        vec![
            #[cfg(feature = "cuda")]
            Backend::Cuda,
            #[cfg(feature = "wgpu")]
            Backend::Wgpu,
            #[cfg(feature = "flex")]
            Backend::Flex,
            #[cfg(feature = "ndarray")]
            Backend::NdArray,
        ]
    }

    /// The preferred backend of this build.
    ///
    /// # Panics
    ///
    /// If the crate was built without any backend feature.
    pub fn preferred() -> Backend {
        Self::available().into_iter().next().expect("provenant-model needs one of the features flex, ndarray, cuda or wgpu")
    }

    /// A device for inference (no autodiff).
    pub fn device(self) -> Device {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated, reason = "ndarray stays selectable for comparison until Burn removes it")]
            Backend::NdArray => Device::ndarray(),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Device::cuda(0usize),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        }
    }

    /// A device for training: the same backend with autodiff.
    pub fn training_device(self) -> Device {
        self.device().autodiff()
    }
}

impl Backend {
    /// The backend's name, as `--backend` options and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => "flex",
            #[cfg(feature = "ndarray")]
            Backend::NdArray => "ndarray",
            #[cfg(feature = "cuda")]
            Backend::Cuda => "cuda",
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => "wgpu",
        }
    }

    /// Whether the backend runs on a GPU.
    pub fn is_gpu(self) -> bool {
        !matches!(self.name(), "flex" | "ndarray")
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    /// A compiled backend by name; the error lists the ones this build has.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::available().into_iter().find(|backend| backend.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::available().into_iter().map(Backend::name).collect();
            format!("backend {name:?} is not compiled into this build (it has {})", names.join(", "))
        })
    }
}

/// glibc allocator settings for a process that trains or serves models, as the value of the
/// `GLIBC_TUNABLES` environment variable (glibc reads it at start, so it is set where the process
/// is launched: the Docker images, `scripts/suite-lib.sh`, `train-bench`'s children).
///
/// A tensor above glibc's mmap threshold (128 KiB at first, raised only as far as the largest
/// block freed) comes from `mmap` and goes back with `munmap` when dropped, so every training
/// step maps and faults in fresh zeroed pages for its activations and gradients. Page faults of
/// two threads serialise on the process's memory-map lock: with the threshold at its 32 MiB
/// maximum (and trimming only above 256 MiB) blocks are reused from the heap instead, and the
/// two-shard training step ran 1.5× faster on two cores (`train-bench`).
pub const GLIBC_TUNABLES: &str = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456";

/// Whether this process was started with [`GLIBC_TUNABLES`]'s mmap threshold (or its own).
pub fn allocator_is_tuned() -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|tunables| tunables.contains("glibc.malloc.mmap_threshold"))
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
}

/// The preferred backend's inference device.
pub fn inference_device() -> Device {
    Backend::preferred().device()
}

/// The preferred backend's training (autodiff) device.
pub fn training_device() -> Device {
    Backend::preferred().training_device()
}
