//! The style and script helpers the servers' HTML pages share (the proxy's dashboard,
//! test-server's status page): one look, one copy. Pages are plain HTML files compiled into the
//! binaries (no CDN, no build step, no framework); [`assemble`] puts the shared parts into a page
//! at its `/*SHARED STYLE*/` and `/*SHARED SCRIPT*/` markers.
//!
//! ```
//! let page = shared::page::assemble(
//!     r#"<link rel="icon" href="/*SHARED ICON*/"><style>/*SHARED STYLE*/</style><script>/*SHARED SCRIPT*/</script>"#,
//! );
//! assert!(page.contains("--ok:") && page.contains("function percentile"));
//! assert!(page.contains(r#"href="data:image/svg+xml,%3Csvg"#));
//! ```

/// CSS for cards, tiles, badges, sparklines and forms, readable from phone width up.
pub const STYLE: &str = include_str!("page/style.css");

/// JavaScript helpers: `$`, `fmt`, `percentile` (from histogram buckets), `spark` (an SVG
/// sparkline), `escapeHtml`.
pub const SCRIPT: &str = include_str!("page/common.js");

/// The servers' icon (SVG): in the pages as a `data:` URL (their `/*SHARED ICON*/` marker),
/// and served as `/favicon.ico` where a browser may ask for one.
pub const ICON_SVG: &str = include_str!("page/icon.svg");

/// The content type of [`ICON_SVG`].
pub const ICON_TYPE: &str = "image/svg+xml";

/// `page` with the shared style, script and icon in place of their markers.
pub fn assemble(page: &str) -> String {
    page.replacen("/*SHARED STYLE*/", STYLE, 1)
        .replacen("/*SHARED SCRIPT*/", SCRIPT, 1)
        .replacen("/*SHARED ICON*/", &icon_data_url(), 1)
}

/// [`ICON_SVG`] as a `data:` URL for an HTML attribute (the characters a URL or the attribute
/// cannot hold as they are, escaped).
fn icon_data_url() -> String {
    let mut url = String::from("data:image/svg+xml,");
    for c in ICON_SVG.chars() {
        match c {
            '"' => url.push_str("%22"),
            '#' => url.push_str("%23"),
            '%' => url.push_str("%25"),
            '<' => url.push_str("%3C"),
            '>' => url.push_str("%3E"),
            '\n' => {}
            c => url.push(c),
        }
    }
    url
}
