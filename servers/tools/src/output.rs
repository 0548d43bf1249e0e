//! Standard output for the tools' binaries: a line that cannot be written because the reader
//! went away (`client sql … | head -1`) ends the program quietly, as `yes | head -1` does,
//! instead of the panic `println!` gives on a closed pipe.
//!
//! ```
//! tools::say!("rps={:.1}", 1.0);
//! ```

use std::io::Write;

/// Exit status on a closed standard output: 128 + SIGPIPE, what a shell shows for a program
/// the signal ended.
pub const CLOSED_PIPE_STATUS: i32 = 141;

/// Writes one line to standard output; exits with [`CLOSED_PIPE_STATUS`] if it cannot.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(CLOSED_PIPE_STATUS);
    }
}

/// `println!` that ends the program quietly when standard output is closed (see the module).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
