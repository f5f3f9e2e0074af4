//! Upgrades without a refused connection: the running process hands its listening socket to
//! the new one over a unix socket (`SCM_RIGHTS`), then stops accepting and asks its miners to
//! reconnect, which lands them on the new process at the same address.
//!
//! Both processes hold the same listening socket for a moment, so a connection arriving
//! meanwhile waits in its backlog and is accepted by whichever calls `accept` first; none is
//! refused. The new process asks only once it is ready to serve (node checked, first job
//! built), so the old one stops accepting when there is somewhere else to go.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use withfd::WithFdExt;

/// The request and the answer's one byte of data (the socket rides along with it).
const ASK: u8 = b'H';
const GIVE: u8 = b'L';

/// Asks the process listening on `path` for its listening socket. `None` when no process
/// answers there (a first start, or a stale socket file from a crash).
///
/// # Errors
/// A process answered but the handover failed.
pub async fn take_over(path: &Path) -> std::io::Result<Option<TcpListener>> {
    let path = path.to_path_buf();
    let fd = tokio::task::spawn_blocking(move || ask(&path))
        .await
        .map_err(std::io::Error::other)??;
    let Some(fd) = fd else { return Ok(None) };
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener).map(Some)
}

fn ask(path: &Path) -> std::io::Result<Option<OwnedFd>> {
    let stream = match StdUnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut stream = stream.with_fd();
    stream.write_all(&[ASK])?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer)?;
    if answer[0] != GIVE {
        return Err(std::io::Error::other(
            "the running process refused the handover",
        ));
    }
    let fd = stream.take_fds().next();
    fd.map(Some)
        .ok_or_else(|| std::io::Error::other("the running process sent no socket"))
}

/// Serves handover requests on `path` until `stop`: the first one gets a duplicate of
/// `listener`'s socket, then `handed_over` is cancelled (the caller stops accepting and shuts
/// down).
pub async fn serve(
    path: PathBuf,
    listener: std::net::TcpListener,
    handed_over: CancellationToken,
    stop: CancellationToken,
) {
    // A socket file left by a process that is gone (connect failed in take_over).
    let _ = std::fs::remove_file(&path);
    let control = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot listen for upgrades (upgrade.handover_socket); an upgrade will refuse connections");
            return;
        }
    };
    info!(path = %path.display(), "ready to hand the listening socket to the next version");
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            a = control.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "upgrade socket accept failed");
                    continue;
                }
            },
        };
        let Ok(listener) = listener.try_clone() else {
            continue;
        };
        let give = tokio::task::spawn_blocking(move || give(stream, &listener));
        match give.await.map_err(std::io::Error::other).and_then(|r| r) {
            Ok(()) => {
                info!("listening socket handed to the new version: no longer accepting here, miners are asked to reconnect");
                handed_over.cancel();
                return;
            }
            Err(e) => {
                warn!(error = %e, "an upgrade asked for the listening socket and the handover failed; still serving");
            }
        }
    }
}

fn give(stream: tokio::net::UnixStream, listener: &std::net::TcpListener) -> std::io::Result<()> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut stream = stream.with_fd();
    let mut ask = [0u8; 1];
    stream.read_exact(&mut ask)?;
    if ask[0] != ASK {
        return Err(std::io::Error::other("not a handover request"));
    }
    stream.write_with_fd(&[GIVE], &[listener.as_fd()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listening_socket_moves_and_keeps_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        assert!(
            take_over(&path).await.unwrap().is_none(),
            "nobody there yet"
        );
        let old = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = old.local_addr().unwrap();
        let handed = CancellationToken::new();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            path.clone(),
            old.try_clone().unwrap(),
            handed.clone(),
            stop,
        ));
        // The old listener stops accepting; a connection made now waits in the backlog.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let waiting = tokio::net::TcpStream::connect(addr)
            .await
            .expect("queued, not refused");
        let new = take_over(&path).await.unwrap().expect("handed over");
        handed.cancelled().await;
        server.await.unwrap();
        drop(old);
        assert_eq!(new.local_addr().unwrap(), addr);
        let (accepted, _) = new.accept().await.expect("the queued connection");
        assert_eq!(accepted.peer_addr().unwrap(), waiting.local_addr().unwrap());
    }
}
