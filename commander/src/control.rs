//! The root-only control socket behind `ruroco-commander grants`, `revoke` and `reload`: a Unix stream
//! socket (0600 root, in a 0700 root directory) that also checks each peer's uid with
//! SO_PEERCRED. One JSON request line in, one JSON response line out (docs/grants.md).
//! It must never serve a peer that is not root, nor read an unbounded request.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ruroco_kit::peer::peer_cred;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::dispatch::{Dispatcher, GrantView};
use crate::reload::{Outcome, Reloader};

/// A request line longer than this is refused.
pub(crate) const MAX_REQUEST_BYTES: u64 = 4096;
/// A response longer than this is refused by the client (65536 grants fit easily).
pub(crate) const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// The commander gives a client this long to send its request line.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A client waits this long for the answer: a revoke of thousands of grants records each one
/// durably before it answers.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// The only uid served.
const ROOT: u32 = 0;

/// What the operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// Every grant.
    List {},
    /// Undo matching grants now (`None` matches any).
    Revoke {
        command: Option<String>,
        ip: Option<IpAddr>,
    },
    /// Re-read the config now and answer with the outcome (`ExecReload=`).
    Reload {},
}

/// The commander's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    Grants(Vec<GrantView>),
    Reloaded(Outcome),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error(
        "cannot reach the commander at {path}: {source} (is it running? systemctl status ruroco-commander; run this as root)"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path} is served by uid {uid}, not root: refusing to talk to it")]
    NotRoot { path: String, uid: u32 },
    #[error("control socket {path}: {message}")]
    Protocol { path: String, message: String },
    #[error("the commander refused: {0}")]
    Refused(String),
}

/// Control connections served at once; more are closed on accept.
pub(crate) const MAX_CONNECTIONS: usize = 8;

/// Serve control connections until the listener fails; each is handled on its own task.
pub(crate) async fn serve(
    listener: UnixListener,
    dispatcher: Arc<Dispatcher>,
    reloader: Arc<Reloader>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(event = "rejected", reason = "too_many_control_connections");
            continue;
        };
        let (d, r) = (dispatcher.clone(), reloader.clone());
        tokio::spawn(async move {
            handle(stream, d, r).await;
            drop(permit);
        });
    }
}

async fn handle(mut stream: UnixStream, dispatcher: Arc<Dispatcher>, reloader: Arc<Reloader>) {
    let reply = match peer_cred(&stream) {
        Ok(c) if c.uid == ROOT => None,
        Ok(c) => {
            tracing::warn!(
                event = "rejected",
                reason = "control_peer_uid",
                uid = c.uid,
                pid = c.pid
            );
            Some(Response::Error(format!(
                "uid {} may not use the control socket: run as root",
                c.uid
            )))
        }
        Err(e) => {
            tracing::warn!(event = "rejected", reason = "peer_cred", error = %e);
            return;
        }
    };
    // Read the (bounded) request even from a refused peer: closing a Unix socket with unread
    // data makes the peer's read fail with ECONNRESET before it sees the refusal.
    let request = read_request(&mut stream).await;
    let reply = match (reply, request) {
        (Some(refusal), _) => refusal,
        (None, Ok(Request::List {})) => Response::Grants(dispatcher.list().await),
        (None, Ok(Request::Revoke { command, ip })) => {
            let ip = ip.map(ruroco_proto::ip::canonical);
            Response::Grants(dispatcher.revoke(command.as_deref(), ip).await)
        }
        (None, Ok(Request::Reload {})) => Response::Reloaded(reloader.reload().await),
        (None, Err(message)) => Response::Error(message),
    };
    let mut line =
        serde_json::to_string(&reply).unwrap_or_else(|_| "{\"error\":\"encoding\"}".to_owned());
    line.push('\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(line.as_bytes())).await;
}

async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    let mut r = BufReader::new(stream).take(MAX_REQUEST_BYTES + 1);
    match tokio::time::timeout(IO_TIMEOUT, r.read_line(&mut line)).await {
        Ok(Ok(_)) if line.len() as u64 > MAX_REQUEST_BYTES => {
            Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"))
        }
        Ok(Ok(_)) => serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}")),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no request within the timeout".to_owned()),
    }
}

/// Send one request to the commander at `path` and wait for its answer (grants).
pub(crate) async fn request(path: &Path, req: &Request) -> Result<Vec<GrantView>, ControlError> {
    match exchange(path, req).await? {
        Response::Grants(g) => Ok(g),
        Response::Error(e) => Err(ControlError::Refused(e)),
        Response::Reloaded(_) => Err(ControlError::Protocol {
            path: path.display().to_string(),
            message: "answered a reload".to_owned(),
        }),
    }
}

/// `ruroco-commander reload`: ask the commander at `path` to reload and return its outcome.
pub(crate) async fn reload(path: &Path) -> Result<Outcome, ControlError> {
    match exchange(path, &Request::Reload {}).await? {
        Response::Reloaded(o) => Ok(o),
        Response::Error(e) => Err(ControlError::Refused(e)),
        Response::Grants(_) => Err(ControlError::Protocol {
            path: path.display().to_string(),
            message: "answered with grants (a commander that does not know reload?)".to_owned(),
        }),
    }
}

/// One request line out, one response line back (bounded in size and time).
async fn exchange(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let p = path.display().to_string();
    let proto = |message: String| ControlError::Protocol {
        path: p.clone(),
        message,
    };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: p.clone(),
            source,
        })?;
    let cred = peer_cred(&stream).map_err(|e| proto(format!("SO_PEERCRED: {e}")))?;
    if cred.uid != ROOT {
        return Err(ControlError::NotRoot {
            path: p.clone(),
            uid: cred.uid,
        });
    }
    let mut line = serde_json::to_string(req).map_err(|e| proto(e.to_string()))?;
    line.push('\n');
    let mut reply = String::new();
    let exchange = async {
        // A refusing commander answers without reading: its answer is still there to read
        // after the write failed.
        let sent = async {
            stream.write_all(line.as_bytes()).await?;
            stream.shutdown().await
        }
        .await;
        let read = (&mut stream)
            .take(MAX_RESPONSE_BYTES)
            .read_to_string(&mut reply)
            .await;
        match (sent, read) {
            (_, Ok(n)) if n > 0 => Ok(()),
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(()), Ok(_)) => Ok(()),
        }
    };
    match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(proto(e.to_string())),
        Err(_) => return Err(proto("no answer within the timeout".to_owned())),
    }
    serde_json::from_str(reply.trim()).map_err(|e| proto(format!("bad answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            serde_json::to_string(&Request::List {}).unwrap(),
            r#"{"op":"list"}"#
        );
        let r: Request =
            serde_json::from_str(r#"{"op":"revoke","command":"open","ip":"192.0.2.7"}"#).unwrap();
        assert_eq!(
            r,
            Request::Revoke {
                command: Some("open".into()),
                ip: Some("192.0.2.7".parse().unwrap())
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"list","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"run"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Request::Reload {}).unwrap(),
            r#"{"op":"reload"}"#
        );
        let r = Response::Reloaded(Outcome {
            ok: false,
            message: "reload failed: x".into(),
        });
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"reloaded":{"ok":false,"message":"reload failed: x"}}"#
        );
    }
}
