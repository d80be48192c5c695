//! Run-time backend choice among those compiled in (cargo features `flex`, `ndarray`, `wgpu`, `cuda`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

use ptune_transformer::FrozenOps;

/// A Burn backend selectable with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// burn-flex (CPU).
    Flex,
    /// burn-ndarray (CPU).
    Ndarray,
    /// burn-wgpu (Vulkan/Metal/DX12; Mesa lavapipe on CPU-only machines).
    Wgpu,
    /// burn-cuda (NVIDIA GPUs; needs the driver and NVRTC at run time).
    Cuda,
}

impl Default for BackendChoice {
    fn default() -> Self {
        if cfg!(feature = "flex") {
            BackendChoice::Flex
        } else if cfg!(feature = "ndarray") {
            BackendChoice::Ndarray
        } else if cfg!(feature = "cuda") {
            BackendChoice::Cuda
        } else {
            BackendChoice::Wgpu
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Flex => "flex",
            BackendChoice::Ndarray => "ndarray",
            BackendChoice::Wgpu => "wgpu",
            BackendChoice::Cuda => "cuda",
        })
    }
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flex" => Ok(BackendChoice::Flex),
            "ndarray" => Ok(BackendChoice::Ndarray),
            "wgpu" => Ok(BackendChoice::Wgpu),
            "cuda" => Ok(BackendChoice::Cuda),
            other => Err(format!("unknown backend `{other}` (flex, ndarray, wgpu, cuda)")),
        }
    }
}

/// Work generic over the backend: [`with_backend`] instantiates it for the one chosen at run time.
pub trait OnBackend {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` (training wraps it in `Autodiff<B>`).
    fn run<B: FrozenOps>(self) -> Result<Self::Output>;
}

/// Runs `job` on the chosen backend, or says which backends this binary was built with: the CLI's
/// one backend dispatch.
pub fn with_backend<J: OnBackend>(choice: BackendChoice, job: J) -> Result<J::Output> {
    match choice {
        #[cfg(feature = "flex")]
        BackendChoice::Flex => job.run::<burn::backend::Flex>(),
        #[cfg(feature = "ndarray")]
        BackendChoice::Ndarray => job.run::<burn::backend::NdArray>(),
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => job.run::<burn::backend::Wgpu>(),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => {
            require_cuda_driver()?;
            job.run::<burn::backend::Cuda>()
        }
        #[allow(unreachable_patterns)]
        other => bail!(
            "backend `{other}` is not compiled into this binary: the GPU backends are cargo features \
             (`cargo build -p ptune-cli --features {other}`; `cargo xtask ptune --backend {other} …` \
             and `cargo xtask compare --backends …,{other}` add it themselves)"
        ),
    }
}

/// The CUDA backend loads `libcuda.so` at run time and panics (in a worker thread) when it is absent:
/// look for the driver first and say so plainly instead.
#[cfg(feature = "cuda")]
fn require_cuda_driver() -> Result<()> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/nvidia/lib64",
            "/usr/local/cuda/lib64",
            "/usr/lib/wsl/lib",
        ]
        .map(std::path::PathBuf::from),
    );
    let in_dirs =
        dirs.iter().any(|d| d.join("libcuda.so.1").exists() || d.join("libcuda.so").exists());
    let in_ldconfig = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so"));
    if in_dirs || in_ldconfig {
        Ok(())
    } else {
        bail!("backend `cuda`: the NVIDIA driver library libcuda.so was not found (no GPU driver on this machine?); use --backend flex, ndarray or wgpu")
    }
}
