//! Branch-free `exp` and `erf` for the burn-flex kernels, written so that LLVM vectorizes the loops
//! that call them, and [`simd`], which runs such a loop compiled for the best instruction set the
//! CPU has (AVX-512, AVX2 + FMA, … through `pulp`'s run-time dispatch; the crate itself is built for
//! the baseline x86-64).
//!
//! libm's `expf` and `erff` are scalar calls that LLVM cannot vectorize: they were 9 % of a MiniLM
//! training step's samples (softmax and exact GELU). These are within a few ulp of them (tests
//! below), well inside the tolerances of the HF parity fixtures.

/// Runs `f` compiled for the CPU's widest SIMD instruction set (detected once, at run time), so
/// loops over [`exp`] / [`erf`] in it vectorize.
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    // pulp's `Arch` picks AVX2 only with its `x86-v3` feature, which the gemm crate (the other user
    // of pulp here) leaves off; asking for the instruction sets one by one covers both.
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(v4) = pulp::x86::V4::try_new() {
            return pulp::Simd::vectorize(v4, f);
        }
        if let Some(v3) = pulp::x86::V3::try_new() {
            return pulp::Simd::vectorize(v3, f);
        }
    }
    pulp::Arch::new().dispatch(f)
}

/// `e^x` for f32, ≤ 2 ulp from libm's over `[-87, 88]`; `0` below `-87` (where e^x is below the
/// normal range: masked attention scores), saturating at `e^88` above. Cephes' `expf`: `x = n·ln2 + r`
/// with `|r| ≤ ln2/2`, a degree-6 polynomial for `e^r`, `2^n` built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * z + r + 1.0;
    // n (in [-126, 127]) sits in the low bits of t; 2^n is (n + 127) << 23.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let e = y * two_n;
    if x < -87.0 {
        0.0
    } else {
        e
    }
}

/// The error function for f32, within 5e-7 of libm's `erff` (absolute): the rational minimax
/// approximation on `[-4, 4]` used by Eigen and XLA, exactly `±1` beyond `±3.9` (as libm).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let p = x * p;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_474e-2;
    // Beyond 3.9, erf is within half an ulp of ±1 in f32, which libm returns; the rational form
    // would give 0.9999999.
    if x.abs() >= 3.9 {
        1.0f32.copysign(x)
    } else {
        p / q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp_distance(a: f32, b: f32) -> u32 {
        let key = |v: f32| {
            let bits = v.to_bits() as i32;
            if bits < 0 {
                i32::MIN - bits
            } else {
                bits
            }
        };
        key(a).abs_diff(key(b))
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (ours, reference) = (exp(x), x.exp());
            worst = worst.max(ulp_distance(ours, reference));
            x += 0.000_37;
        }
        assert!(worst <= 2, "worst distance {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert!(exp(88.0).is_finite());
    }

    #[test]
    fn erf_is_within_5e_7_of_libm() {
        let mut worst = 0.0f32;
        let mut x = -6.0f32;
        while x <= 6.0 {
            worst = worst.max((erf(x) - libm::erff(x)).abs());
            x += 0.000_13;
        }
        assert!(worst <= 5e-7, "worst absolute error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn simd_dispatch_gives_the_scalar_results() {
        let xs: Vec<f32> = (0..1000).map(|i| i as f32 * 0.013 - 6.5).collect();
        let mut a = xs.clone();
        simd(|| a.iter_mut().for_each(|v| *v = exp(*v) + erf(*v)));
        for (&x, &y) in xs.iter().zip(&a) {
            assert!((y - (exp(x) + erf(x))).abs() <= 1e-6 * y.abs().max(1.0));
        }
    }
}
