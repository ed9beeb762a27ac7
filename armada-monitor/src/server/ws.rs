//! The WebSocket feed: one task per connection, fed from the monitor's broadcast. A slow
//! connection only delays itself; when it falls too far behind it is told how much it
//! missed and reloads through REST.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use std::sync::Arc;

use axum::http::StatusCode;

use super::{AppState, MAX_WEBSOCKETS, Params};
use crate::hub::Notice;

#[derive(Debug, Deserialize)]
pub(super) struct Subscription {
    /// The run to follow; the runs list when absent.
    run: Option<String>,
}

pub(super) async fn subscribe(
    State(state): State<AppState>,
    Params(subscription): Params<Subscription>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = Arc::clone(&state.sockets).try_acquire_owned() else {
        return super::error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "{MAX_WEBSOCKETS} live connections are open, the most this service keeps: close \
                 other dashboard tabs and try again"
            ),
        );
    };
    let feed = state.monitor.subscribe();
    let closed = state.monitor.closed();
    upgrade.on_upgrade(move |socket| async move {
        // Held for as long as the connection lasts.
        let _permit = permit;
        tokio::select! {
            () = forward(socket, feed, subscription.run) => {}
            () = closed.cancelled() => {}
        }
    })
}

fn wanted(notice: &Notice, run: Option<&str>) -> bool {
    match run {
        Some(run) => &*notice.run_id == run,
        None => notice.for_list,
    }
}

async fn forward(
    mut socket: WebSocket,
    mut feed: tokio::sync::broadcast::Receiver<Notice>,
    run: Option<String>,
) {
    loop {
        tokio::select! {
            notice = feed.recv() => {
                let text = match notice {
                    Ok(notice) if wanted(&notice, run.as_deref()) => notice.text.to_string(),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(skipped)) => {
                        format!("{{\"type\":\"lagged\",\"skipped\":{skipped}}}")
                    }
                    Err(RecvError::Closed) => return,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_) | Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
