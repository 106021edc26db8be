//! What the benchmarks share: summaries of timings and the kernel-start floor.

use std::time::{Duration, Instant};

use slurmlab::jupyter::{JupyterServer, KernelChannel};

/// The median (sorts `v`).
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The 90th percentile.
pub fn p90(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[(s.len() * 9 / 10).min(s.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The floor of any session start: `POST /api/kernels`, then the first `1+1` reply over
/// the kernel's websocket (the kernel is shut down afterwards, untimed).
pub async fn kernel_start_floor(server: &JupyterServer) -> Duration {
    let t = Instant::now();
    let kernel = server.start_kernel("python3", None).await.unwrap();
    let mut channel = KernelChannel::connect(server, &kernel.id, None)
        .await
        .unwrap();
    channel
        .execute("1+1", Duration::from_secs(60))
        .await
        .unwrap();
    let elapsed = t.elapsed();
    server.shutdown(&kernel.id).await.unwrap();
    elapsed
}
