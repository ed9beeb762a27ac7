//! The shop the example scrapes: listing pages with pagination, product pages whose stock is
//! rendered by JavaScript, a login form, a page that shows who the browser claims to be, a slow
//! page and an error page. Served on 127.0.0.1 by the example's own binary.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

/// Products in the shop's listing.
pub const PRODUCTS: u32 = 20;
/// Products served by id (`/product/{id}`, `1..=CATALOG`): the listing shows the first
/// [`PRODUCTS`]; the rest give benchmarks many distinct pages, each the same size.
pub const CATALOG: u32 = 10_000;
/// How long a product page's script waits before rendering the stock, by default.
pub const STOCK_DELAY_MS: u32 = 100;
/// Products per listing page.
pub const PAGE_SIZE: u32 = 5;

/// A product's name.
pub fn name(id: u32) -> String {
    format!("Product {id}")
}

/// A product's price, as shown.
pub fn price(id: u32) -> String {
    format!("€{}.99", id * 3)
}

/// A product's stock, as rendered by the page's script.
pub fn stock(id: u32) -> u32 {
    id * 7 % 13
}

/// The shop's routes.
pub fn router() -> Router {
    router_with_stock_delay(STOCK_DELAY_MS)
}

/// The shop's routes, with product pages rendering their stock after `stock_delay_ms`
/// (benchmarks use 0, so that a page costs the browser's work rather than a timer).
pub fn router_with_stock_delay(stock_delay_ms: u32) -> Router {
    Router::new()
        .route("/", get(|| async { page("Shop", "<a href=\"/products?page=1\">Products</a>") }))
        .route("/products", get(listing))
        .route(
            "/product/{id}",
            get(move |id: Path<u32>| product(id, stock_delay_ms)),
        )
        .route("/img/{id}", get(image))
        .route("/login", get(login_form).post(login))
        .route("/account", get(account))
        .route("/whoami", get(|| async { page("Who am I", WHOAMI) }))
        .route("/slow", get(slow))
        .route("/error", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, page("500 Internal Server Error", "<h1>Something broke</h1><script>console.error('the shop is down')</script>")) }))
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head><body>{body}</body></html>"
    ))
}

#[derive(Deserialize)]
struct ListingQuery {
    #[serde(default = "first_page")]
    page: u32,
}

fn first_page() -> u32 {
    1
}

async fn listing(Query(query): Query<ListingQuery>) -> Response {
    let pages = PRODUCTS.div_ceil(PAGE_SIZE);
    if query.page == 0 || query.page > pages {
        return (
            StatusCode::NOT_FOUND,
            page("Not found", "<h1>No such page</h1>"),
        )
            .into_response();
    }
    let first = (query.page - 1) * PAGE_SIZE + 1;
    let items: String = (first..first + PAGE_SIZE)
        .map(|id| {
            format!(
                "<li class=\"product\"><img src=\"/img/{id}\" onerror=\"window.blockedImages=(window.blockedImages||0)+1\"><a href=\"/product/{id}\">{}</a></li>",
                name(id)
            )
        })
        .collect();
    let next = if query.page < pages {
        format!(
            "<a id=\"next\" href=\"/products?page={}\">Next</a>",
            query.page + 1
        )
    } else {
        String::new()
    };
    page(
        &format!("Products, page {}", query.page),
        &format!("<ul>{items}</ul>{next}"),
    )
    .into_response()
}

async fn product(Path(id): Path<u32>, stock_delay_ms: u32) -> Response {
    if id == 0 || id > CATALOG {
        return (
            StatusCode::NOT_FOUND,
            page("Not found", "<h1>No such product</h1>"),
        )
            .into_response();
    }
    let body = format!(
        "<h1 id=\"name\">{}</h1><p id=\"price\">{}</p><p id=\"sku\">SKU-{id:04}</p>\
         <p id=\"stock\">loading</p>\
         <script>setTimeout(() => {{ document.getElementById('stock').textContent = 'in stock: {}'; }}, {stock_delay_ms});</script>",
        name(id),
        price(id),
        stock(id)
    );
    page(&name(id), &body).into_response()
}

/// A 1×1 transparent PNG.
const PIXEL: [u8; 67] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

async fn image(Path(_id): Path<u32>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/png")], PIXEL)
}

async fn login_form() -> Html<String> {
    page(
        "Log in",
        "<form method=\"post\" action=\"/login\"><input name=\"user\" id=\"user\">\
         <input name=\"password\" id=\"password\" type=\"password\"><button id=\"log-in\">Log in</button></form>",
    )
}

#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(Form(login): Form<Login>) -> Response {
    if login.password != "secret" {
        return (
            StatusCode::UNAUTHORIZED,
            page("Log in", "<p id=\"error\">Wrong password</p>"),
        )
            .into_response();
    }
    let cookie = format!(
        "session={}; Path=/; HttpOnly",
        login.user.replace([';', ','], "")
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/account")).into_response()
}

async fn account(headers: HeaderMap) -> Response {
    let user = headers
        .get(header::COOKIE)
        .and_then(|cookie| cookie.to_str().ok())
        .and_then(|cookie| {
            cookie
                .split("; ")
                .find_map(|part| part.strip_prefix("session="))
        });
    match user {
        Some(user) => {
            page("Account", &format!("<p id=\"welcome\">Welcome, {user}</p>")).into_response()
        }
        None => Redirect::to("/login").into_response(),
    }
}

async fn slow() -> Html<String> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    page("Slow", "<p id=\"done\">Finally</p>")
}

const WHOAMI: &str = "<pre id=\"who\"></pre><script>\
    const options = Intl.DateTimeFormat().resolvedOptions();\
    document.getElementById('who').textContent = JSON.stringify({\
      user_agent: navigator.userAgent, language: navigator.language,\
      timezone: options.timeZone, locale: options.locale,\
      width: window.innerWidth, scale: window.devicePixelRatio });\
    </script>";

/// Serves the shop on `address` from a thread of its own, for as long as the process lives.
pub fn serve_in_background(address: SocketAddr) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("catalog-site".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("the shop cannot start: {error}");
                    return;
                }
            };
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        if let Err(error) = axum::serve(listener, router()).await {
                            eprintln!("the shop stopped: {error}");
                        }
                    }
                    Err(error) => eprintln!("the shop cannot listen: {error}"),
                }
            });
        })
}
