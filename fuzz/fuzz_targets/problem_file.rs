//! The layer-problem loader (`optima solve`'s input, safetensors) on arbitrary bytes, then the
//! validation the command runs on what it loaded.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use optima::io::parse_problem_file;
use optima::{Hessian, LayerProblem, Mask};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = parse_problem_file(data, Path::new("fuzz.safetensors")) else { return };
    let (m, n) = file.weight.dim();
    assert_eq!(file.hessian.dim(), (n, n));
    if let Some(mask) = &file.mask {
        assert_eq!((mask.rows(), mask.cols()), (m, n));
    }
    let Ok(hessian) = Hessian::new(file.hessian, 0.01) else { return };
    let mask = file.mask.unwrap_or_else(|| Mask::empty(m, n));
    let _ = LayerProblem::new(file.weight, hessian, mask);
});
