//! What both ends of a TCP connection share: reading and writing frames (bounded, with
//! time limits), socket options and the errors of a connection.

use crate::conn::ConnError;
use crate::wire::{check_header, Frame, Header, WireError, HEADER_SIZE};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zerocopy::FromBytes;

/// Why a connection ended or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The socket failed or closed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are no frame or no message.
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Conn(#[from] ConnError),
    /// The peer did not finish the handshake, or a write did not progress, in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The handshake was refused.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer holds too much of our memory (it does not acknowledge what we send).
    #[error("the peer does not acknowledge")]
    Overrun,
    /// The peer closed the socket between frames.
    #[error("the peer closed the socket")]
    Closed,
}

/// Read one frame: the header first, refused before its payload is waited for if it is
/// bad, so a frame never costs more than `HEADER_SIZE + MAX_PAYLOAD` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, NetError> {
    let mut hb = [0u8; HEADER_SIZE];
    if r.read(&mut hb[..1]).await? == 0 {
        return Err(NetError::Closed);
    }
    r.read_exact(&mut hb[1..]).await?;
    let h = Header::read_from_bytes(&hb).map_err(|_| WireError::Pad)?;
    let (cmd, error, len) = check_header(&h)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Frame::of_header(&h, cmd, error, payload))
}

/// Write what `take` gives each time `notify` wakes us, until it says this socket is no
/// longer the conversation's (`None`: another socket took over) or a write fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    notify: &tokio::sync::Notify,
    limit: Duration,
    mut take: impl FnMut() -> Option<Vec<Frame>>,
) -> Result<(), NetError> {
    loop {
        notify.notified().await;
        loop {
            let Some(frames) = take() else {
                return Ok(());
            };
            if frames.is_empty() {
                break;
            }
            write_frames(w, &frames, limit).await?;
        }
    }
}

/// Write `frames`, failing if the peer does not take them within `limit`.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Frame],
    limit: Duration,
) -> Result<(), NetError> {
    let mut buf = Vec::new();
    for f in frames {
        f.encode_into(&mut buf);
    }
    match tokio::time::timeout(limit, async {
        w.write_all(&buf).await?;
        w.flush().await
    })
    .await
    {
        Ok(r) => Ok(r?),
        Err(_) => Err(NetError::Timeout("the peer does not read")),
    }
}

/// No Nagle delay (requests are small and waited for) and TCP keepalive, so a peer that
/// vanished is noticed even when nothing is sent.
pub fn tune(s: &TcpStream, keepalive: Duration) {
    let _ = s.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval(keepalive / 4 + Duration::from_millis(1));
    let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
}
