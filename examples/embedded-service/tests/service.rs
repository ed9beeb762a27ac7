//! The embedded service end to end: its binary launched on a free port, runs launched through
//! it and their server-sent events read to the end; bad bodies; concurrent requests.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

/// The binary, killed when the test ends.
struct Service {
    url: String,
    _process: tokio::process::Child,
}

async fn start_binary() -> Service {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_embedded-service"))
        .env("EMBEDDED_SERVICE_ADDR", &addr)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Service {
                url: format!("http://{addr}"),
                _process: process,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not start listening on {addr}");
}

/// The service's router in this process, on a free port; the server task ends with the test's
/// runtime.
async fn start_in_process() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum_serve(listener).await });
    url
}

async fn axum_serve(listener: tokio::net::TcpListener) {
    // The test's client is the only one; an error ends the test through its requests.
    let _ = axum::serve(listener, embedded_service::app()).await;
}

async fn post_run(url: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/runs"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Reads a server-sent event stream to its end, as `(event, data)` pairs.
async fn read_events(mut response: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut name, mut data) = (None, String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            // Keep-alive comments carry no event.
            if let Some(name) = name {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

/// Checks the stream's shape and returns the job results by index and the end summary.
fn results_and_end(events: &[(String, Value)]) -> (BTreeMap<u64, Value>, Value) {
    assert_eq!(events.first().unwrap().0, "started");
    let (last, end) = events.last().unwrap();
    assert_eq!(last, "end", "{events:?}");
    let mut results = BTreeMap::new();
    for (name, data) in &events[1..events.len() - 1] {
        match name.as_str() {
            "job" => {
                let index = data["index"].as_u64().unwrap();
                assert!(
                    results.insert(index, data.clone()).is_none(),
                    "job {index} twice"
                );
            }
            "progress" => {}
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    (results, end.clone())
}

#[tokio::test]
async fn a_run_launched_through_the_binary_streams_every_job_then_its_end() {
    let service = start_binary().await;
    let names = [
        "Ada", "Grace", "Barbara", "Edsger", "Linus", "Margaret", "Alan",
    ];
    let jobs: Vec<Value> = names
        .iter()
        .map(|name| json!({ "name": name, "work_ms": 20 }))
        .collect();
    let body = json!({ "agents": 3, "greeting": "Bonjour", "jobs": jobs });
    let events = read_events(post_run(&service.url, body.to_string()).await).await;
    let (results, end) = results_and_end(&events);
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    for (index, result) in &results {
        assert_eq!(result["status"], "succeeded");
        let text = format!("Bonjour, {}!", names[*index as usize]);
        assert_eq!(result["output"]["text"], text.as_str());
    }
    assert_eq!(end["status"], "completed");
    assert_eq!(
        (end["jobs"].as_u64(), end["succeeded"].as_u64()),
        (Some(7), Some(7))
    );
    assert_eq!(end["run_id"], events[0].1["run_id"]);
}

#[tokio::test]
async fn a_bad_body_gets_422_with_every_diagnostic() {
    let url = start_in_process().await;
    let body = json!({
        "agents": 0,
        "jobs": [{ "name": "Ada" }, { "name": 7 }, { "nom": "Grace" }],
    });
    let response = post_run(&url, body.to_string()).await;
    assert_eq!(response.status(), 422);
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let fields: Vec<&str> = answer["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|diagnostic| diagnostic["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["settings.agents", "jobs[1].name", "jobs[2].nom"],
        "{answer}"
    );
    assert!(
        answer["diagnostics"][2]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field")
    );

    // Not even JSON: located by line and column.
    let response = post_run(&url, "{\n  \"jobs\": [,]\n}".to_owned()).await;
    assert_eq!(response.status(), 422);
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let diagnostic = &answer["diagnostics"][0];
    assert_eq!(
        (diagnostic["file"].as_str(), diagnostic["line"].as_u64()),
        (Some("request body"), Some(2))
    );
}

#[tokio::test]
async fn concurrent_requests_stay_apart() {
    let url = start_in_process().await;
    let run = |tag: &'static str, count: u64| {
        let url = url.clone();
        async move {
            let jobs: Vec<Value> = (0..count)
                .map(|index| json!({ "name": format!("{tag}{index}"), "work_ms": 5 }))
                .collect();
            let body = json!({ "agents": 2, "greeting": tag, "jobs": jobs });
            read_events(post_run(&url, body.to_string()).await).await
        }
    };
    let (a, b) = tokio::join!(run("a", 30), run("b", 40));
    for (events, tag, count) in [(a, "a", 30), (b, "b", 40)] {
        let (results, end) = results_and_end(&events);
        assert_eq!(results.len() as u64, count);
        for (index, result) in &results {
            assert_eq!(result["output"]["text"], format!("{tag}, {tag}{index}!"));
        }
        assert_eq!(
            (end["status"].as_str(), end["succeeded"].as_u64()),
            (Some("completed"), Some(count))
        );
    }
}
