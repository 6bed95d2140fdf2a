//! Micro-benchmark of the matrix kernels on SmolLM2-135M shapes (development tool, not a test):
//! `cargo run --release -p device-runtime --example kernel_bench [n_tokens] [reps]`.
//! Prints, per weight type and shape, the single-thread time per product and GMAC/s (CPU time, best of
//! `reps`), for the SIMD path. Random weights with sane scales; the numbers do not depend on the values.

use device_runtime::gguf::GgmlType;
use device_runtime::quant::dot::{matmul, KernelPath, QMatrix};

/// CPU time of all this process's threads (seconds): sum of `sum_exec_runtime` in
/// `/proc/self/task/*/schedstat` (nanoseconds; robust to other processes' load, unlike wall clock).
fn cpu_seconds() -> f64 {
    let mut ns = 0u64;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
            ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ns as f64 * 1e-9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(128);
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut seed = 1u64;
    let mut rnd = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::F32] {
        let mut total = 0f64;
        let mut macs = 0f64;
        for (rows, cols) in [(576usize, 576usize), (192, 576), (1536, 576), (576, 1536)] {
            let (be, bb) = ty.block_size();
            let mut data: Vec<u8> = (0..rows * cols / be * bb).map(|_| rnd() as u8).collect();
            for b in data.chunks_exact_mut(bb) {
                match ty {
                    GgmlType::F32 => b.copy_from_slice(&((rnd() % 1000) as f32 / 1000.0).to_le_bytes()),
                    _ => {
                        b[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
                        if ty == GgmlType::Q4_1 {
                            b[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_bits().to_le_bytes());
                        }
                    }
                }
            }
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let x: Vec<f32> = (0..n * cols).map(|_| (rnd() % 2001) as f32 / 1000.0 - 1.0).collect();
            let mut y = vec![0f32; n * rows];
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t0 = cpu_seconds();
                pool.install(|| matmul(&w, &x, n, &mut y, KernelPath::Best));
                best = best.min(cpu_seconds() - t0);
            }
            let m = (rows * cols * n) as f64;
            println!("{ty:>5} {rows:>5}x{cols:<5} n={n:<4} {:8.3} ms  {:6.2} GMAC/s", best * 1e3, m / best / 1e9);
            // Weight per token in SmolLM2: q,o (576x576) x2, k,v (192x576) x2, gate,up (1536x576) x2, down.
            let count = match (rows, cols) {
                (576, 576) => 2.0,
                (192, 576) => 2.0,
                (1536, 576) => 2.0,
                _ => 1.0,
            };
            total += best * count;
            macs += m * count;
        }
        println!("{ty:>5} one block: {:.3} ms -> 30 blocks {:.1} tokens/s (products only), {:.2} GMAC/s", total * 1e3, n as f64 / (30.0 * total), macs / total / 1e9);
    }
}
