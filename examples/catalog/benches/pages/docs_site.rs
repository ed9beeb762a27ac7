//! A static documentation site the browser bench generates and serves: [`PAGES`] pages of long
//! HTML (a sidebar of links, sections of prose, code blocks, tables and figures), one shared
//! stylesheet, two scripts (one highlights code, one builds an in-page table of contents) and
//! a few SVG figures, with the cache headers a static host sends. Every page is different and
//! the same size; its title and first heading follow from its number.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Pages of the site, `/docs/1.html` to `/docs/{PAGES}.html`.
pub const PAGES: u64 = 600;

const TOPICS: [&str; 12] = [
    "Agents",
    "Jobs",
    "Queues",
    "Retries",
    "Proxies",
    "Identity",
    "Monitor",
    "Dashboard",
    "Kubernetes",
    "Results",
    "Recycling",
    "Interception",
];

/// The page's `<title>`.
pub fn title(page: u64) -> String {
    format!("{} {page} · Armada documentation", topic(page))
}

/// The page's first `<h1>`.
pub fn heading(page: u64) -> String {
    format!("Chapter {page}: {}", topic(page))
}

fn topic(page: u64) -> &'static str {
    TOPICS[(page % TOPICS.len() as u64) as usize]
}

/// The site's routes.
pub fn router() -> Router {
    Router::new()
        .route("/docs/{page}", get(page))
        .route(
            "/static/docs.css",
            get(|| async { cached("text/css", stylesheet()) }),
        )
        .route(
            "/static/highlight.js",
            get(|| async { cached("text/javascript", HIGHLIGHT.to_owned()) }),
        )
        .route(
            "/static/toc.js",
            get(|| async { cached("text/javascript", TOC.to_owned()) }),
        )
        .route("/static/figure/{n}", get(figure))
}

fn cached(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn page(Path(file): Path<String>) -> Response {
    let number = file
        .strip_suffix(".html")
        .and_then(|number| number.parse::<u64>().ok())
        .filter(|number| (1..=PAGES).contains(number));
    let Some(number) = number else {
        return (StatusCode::NOT_FOUND, "no such page").into_response();
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render(number),
    )
        .into_response()
}

async fn figure(Path(n): Path<String>) -> Response {
    let n: u64 = n.trim_end_matches(".svg").parse().unwrap_or(0);
    let bars: String = (0..12)
        .map(|bar| {
            let height = 20 + (n * 7 + bar * 13) % 80;
            format!(
                "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"{height}\" fill=\"#3b6ea5\"/>",
                10 + bar * 20,
                110 - height
            )
        })
        .collect();
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"260\" height=\"120\" viewBox=\"0 0 260 120\">\
         <rect width=\"260\" height=\"120\" fill=\"#f4f6f8\"/>{bars}</svg>"
    );
    cached("image/svg+xml", svg)
}

fn render(number: u64) -> String {
    let sidebar: String = (0..60)
        .map(|offset| {
            let target = (number + offset * 7) % PAGES + 1;
            format!(
                "<li><a href=\"/docs/{target}.html\">{}</a></li>",
                heading(target)
            )
        })
        .collect();
    let sections: String = (1..=8)
        .map(|section| render_section(number, section))
        .collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/static/docs.css\">\
         <script defer src=\"/static/highlight.js\"></script><script defer src=\"/static/toc.js\"></script>\
         </head><body><header class=\"top\"><a href=\"/docs/1.html\">Armada</a>\
         <input type=\"search\" placeholder=\"Search the docs\"></header>\
         <nav class=\"sidebar\"><ul>{sidebar}</ul></nav><main><h1>{heading}</h1>\
         <nav id=\"toc\"></nav>{sections}</main><footer>Page {number} of {PAGES}</footer></body></html>",
        title = title(number),
        heading = heading(number),
    )
}

fn render_section(number: u64, section: u64) -> String {
    let prose: String = (0..4)
        .map(|paragraph| {
            format!(
                "<p>Section {section} of chapter {number}, paragraph {paragraph}: an agent takes \
                 the next job from the run's queue, opens its page with the identity of its row, \
                 reads what the script asks, and reports every step to the monitor. When an \
                 attempt fails it is retried after <code>retry_backoff_secs</code>, on the same \
                 agent or, for a proxy failure, on a fresh identity; the <em>results</em> file \
                 holds one line per job once the run ends.</p>"
            )
        })
        .collect();
    let rows: String = (0..6)
        .map(|row| {
            format!(
                "<tr><td>option_{section}_{row}</td><td>{}</td><td>Sets how chapter {number} behaves.</td></tr>",
                (number * 31 + row) % 997
            )
        })
        .collect();
    let figure = (number + section) % 20;
    format!(
        "<section><h2 id=\"s{section}\">{} {section}</h2>{prose}\
         <pre><code>let run = orchestrator.launch(&amp;plan).await?;\n\
         let report = run.follow(|event| println!(\"{{event:?}}\")).await?;\n\
         assert_eq!(report.progress.failed, 0);</code></pre>\
         <table><thead><tr><th>Key</th><th>Default</th><th>Meaning</th></tr></thead><tbody>{rows}</tbody></table>\
         {image}</section>",
        topic(number + section),
        image = if section.is_multiple_of(3) {
            format!(
                "<figure><img src=\"/static/figure/{figure}.svg\" alt=\"figure {figure}\" width=\"260\" height=\"120\"></figure>"
            )
        } else {
            String::new()
        },
    )
}

fn stylesheet() -> String {
    let mut css = String::from(
        "body{margin:0;font:16px/1.6 system-ui,sans-serif;color:#1d2430;display:grid;\
         grid-template-columns:260px 1fr;grid-template-rows:auto 1fr auto}\
         header.top{grid-column:1/3;display:flex;gap:1rem;padding:.6rem 1rem;background:#0f2540}\
         header.top a{color:#fff;font-weight:700}nav.sidebar{overflow:auto;max-height:100vh;\
         border-right:1px solid #dde3ea;font-size:14px}main{padding:1rem 2rem;max-width:860px}\
         pre{background:#f4f6f8;padding:1rem;overflow:auto}table{border-collapse:collapse;width:100%}\
         td,th{border:1px solid #dde3ea;padding:.3rem .5rem}.kw{color:#a626a4}footer{grid-column:1/3}",
    );
    // The long tail of a real theme: many rules, few of them matching.
    for rule in 0..400 {
        css.push_str(&format!(
            ".theme-{rule} .block-{rule}>p+ul li:nth-child({n}){{margin:{m}px;padding:{p}px;color:#{c:06x}}}",
            n = rule % 7 + 1,
            m = rule % 9,
            p = rule % 5,
            c = (rule * 2_654_435) % 0xff_ffff,
        ));
    }
    css
}

const HIGHLIGHT: &str = "document.querySelectorAll('pre code').forEach(block => {\
  block.innerHTML = block.innerHTML.replace(/\\b(let|await|assert_eq|println)\\b/g, '<span class=\"kw\">$1</span>');\
});";

const TOC: &str = "const toc = document.getElementById('toc');\
document.querySelectorAll('main h2').forEach(heading => {\
  const link = document.createElement('a');\
  link.href = '#' + heading.id; link.textContent = heading.textContent;\
  toc.append(link, document.createTextNode(' '));\
});";
