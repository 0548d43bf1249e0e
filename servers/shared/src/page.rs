//! The style and script helpers the servers' HTML pages share (the proxy's dashboard,
//! test-server's status page): one look, one copy. Pages are plain HTML files compiled into the
//! binaries (no CDN, no build step, no framework); [`assemble`] puts the shared parts into a page
//! at its `/*SHARED STYLE*/` and `/*SHARED SCRIPT*/` markers.
//!
//! ```
//! let page = shared::page::assemble("<style>/*SHARED STYLE*/</style><script>/*SHARED SCRIPT*/</script>");
//! assert!(page.contains("--ok:") && page.contains("function percentile"));
//! ```

/// CSS for cards, tiles, badges, sparklines and forms, readable from phone width up.
pub const STYLE: &str = include_str!("page/style.css");

/// JavaScript helpers: `$`, `fmt`, `percentile` (from histogram buckets), `spark` (an SVG
/// sparkline), `escapeHtml`.
pub const SCRIPT: &str = include_str!("page/common.js");

/// `page` with the shared style and script in place of its markers.
pub fn assemble(page: &str) -> String {
    page.replacen("/*SHARED STYLE*/", STYLE, 1)
        .replacen("/*SHARED SCRIPT*/", SCRIPT, 1)
}
