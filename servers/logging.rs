//! Log output in the original design's format: `[2024-11-21 14:30:20][INFO] message`.

use std::io::Write;

/// Installs the logger: level from `RUST_LOG` (e.g. `info`, `debug`, `engine=debug`), `info`
/// by default; lines go to standard error.
pub fn init() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            writeln!(
                buf,
                "[{}][{}] {}",
                chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
                record.level(),
                record.args()
            )
        })
        .try_init();
}
