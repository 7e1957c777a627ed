//! Framing: each message is postcard-encoded and sent as a big-endian `u32` length followed by
//! that many bytes. The length is checked against a hard limit *before* anything is allocated,
//! so a peer cannot make us reserve memory by announcing a huge frame. Swapping the encoding
//! touches only this file.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The default largest frame: enough for an assignment carrying a playbook of a few MiB, small
/// enough that a misbehaving peer cannot exhaust memory.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// The largest frame an agent may send on a job stream. Agents cut a batch after 64 KiB of
/// text and a line at [`crate::MAX_LOG_LINE_BYTES`] (64 KiB), so a batch stays near 150 KiB;
/// the controller reads ahead a few frames per stream, and this bound keeps that read-ahead
/// small.
pub const MAX_JOB_UP_FRAME: usize = 1024 * 1024;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("undecodable frame: {0}")]
    Undecodable(postcard::Error),
    #[error("cannot encode message: {0}")]
    Encode(postcard::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one message as a complete frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf)).map_err(FrameError::Encode)?;
    let len = buf.len() - 4;
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decodes one complete frame from the front of `bytes`; returns the message and the number of
/// bytes consumed, or `Ok(None)` when `bytes` does not yet hold a whole frame.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(prefix) = bytes.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    let Some(body) = bytes.get(4..4 + len) else {
        return Ok(None);
    };
    let msg = postcard::from_bytes(body).map_err(FrameError::Undecodable)?;
    Ok(Some((msg, 4 + len)))
}

/// Writes one framed message.
pub async fn write_frame<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let frame = encode(msg, max)?;
    w.write_all(&frame).await?;
    Ok(())
}

/// The most a frame's buffer holds before its bytes arrive.
const INITIAL_READ: usize = 8 * 1024;

/// Reads one framed message. `Ok(None)` means the stream ended cleanly between frames.
pub async fn read_frame<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    // The buffer grows as bytes arrive: a peer that announces a large frame and sends nothing
    // costs nothing (the announcement alone is not trusted with an allocation).
    let mut body = Vec::with_capacity(len.min(INITIAL_READ));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(FrameError::Undecodable)
}

/// Reads frames on a task of its own and hands them over a channel. `read_frame` is not
/// cancel-safe (a half-read frame would be lost), so code that `select!`s on incoming messages
/// reads from this channel instead. The channel ends after the stream ends or fails (the
/// failure is the last item).
pub fn spawn_reader<R, T>(
    mut r: R,
    max: usize,
) -> tokio::sync::mpsc::Receiver<Result<T, FrameError>>
where
    R: AsyncRead + Unpin + Send + 'static,
    T: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match read_frame::<_, T>(&mut r, max).await {
                Ok(Some(msg)) => {
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    rx
}

/// Reads frames from a stream it owns, cancel-safely: what arrived is kept in the reader
/// until a whole frame is there, so a [`FrameReader::next`] dropped by a `select!` loses
/// nothing. It does what [`spawn_reader`] does without a task and a channel of its own, which
/// every idle session would otherwise hold (the channel's first block alone is 32 messages).
/// The buffer grows as bytes arrive, never on the strength of an announced length, and is let
/// go of between frames once it grew beyond [`INITIAL_READ`].
pub struct FrameReader<R> {
    r: R,
    buf: Vec<u8>,
    max: usize,
    done: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R, max: usize) -> Self {
        FrameReader {
            r,
            buf: Vec::new(),
            max,
            done: false,
        }
    }

    /// The next frame; `None` once the stream ended (cleanly, or after the error returned
    /// before). Cancel-safe.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T, FrameError>> {
        if self.done {
            return None;
        }
        let r = self.next_inner().await;
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
            self.buf = Vec::new();
        }
        r
    }

    async fn next_inner<T: DeserializeOwned>(&mut self) -> Option<Result<T, FrameError>> {
        loop {
            // Bytes still missing from the frame being read (its prefix first).
            let missing = if self.buf.len() < 4 {
                4 - self.buf.len()
            } else {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > self.max {
                    return Some(Err(FrameError::Oversized { len, max: self.max }));
                }
                if self.buf.len() >= 4 + len {
                    let msg = postcard::from_bytes(&self.buf[4..4 + len])
                        .map_err(FrameError::Undecodable);
                    self.buf.drain(..4 + len);
                    if self.buf.is_empty() && self.buf.capacity() > INITIAL_READ {
                        self.buf = Vec::new();
                    }
                    return Some(msg);
                }
                4 + len - self.buf.len()
            };
            self.buf.reserve(missing.min(INITIAL_READ));
            // Only the reserved room is read into (`Take`), so a Vec that must grow is never
            // grown by the read itself.
            let room = (self.buf.capacity() - self.buf.len()).max(1) as u64;
            match (&mut self.r).take(room).read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return None,
                Ok(0) => return Some(Err(FrameError::Truncated)),
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

/// A reader and a writer of frames of at most `max` bytes, over one bidirectional stream.
pub struct FramedStream<R, W> {
    pub recv: R,
    pub send: W,
    pub max: usize,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> FramedStream<R, W> {
    pub fn new(recv: R, send: W) -> Self {
        FramedStream {
            recv,
            send,
            max: MAX_FRAME,
        }
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        write_frame(&mut self.send, msg, self.max).await
    }

    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        read_frame(&mut self.recv, self.max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    struct Samples {
        up: Vec<Up>,
        down: Vec<Down>,
        job_down: Vec<JobDown>,
        job_up: Vec<JobUp>,
        enroll: Vec<EnrollRequest>,
        enrolled: Vec<EnrollResponse>,
        stream_up: Vec<StreamUp>,
        fetch_down: Vec<FetchDown>,
    }

    fn samples() -> Samples {
        let job = Uuid::new_v4();
        let up = vec![
            Up::Hello(Hello {
                protocol_version: 1,
                agent_version: "0.1.0".into(),
                hostname: "bastion-fra1".into(),
                labels: vec![("dc".into(), "fra1".into())],
                capacity: 4,
                ansible_version: "ansible-playbook [core 2.19.4]".into(),
                running: vec![RunningJob {
                    job,
                    dispatch_id: "d1".into(),
                    acked_through: 42,
                    finished: false,
                }],
                capabilities: vec!["renew".into()],
            }),
            Up::Heartbeat { seq: 7 },
            Up::Status(AgentStatus {
                running: 1,
                capacity: 4,
                draining: true,
            }),
            Up::Renew {
                csr_der: vec![1, 2, 3],
            },
        ];
        let down = vec![
            Down::Welcome(Welcome {
                protocol_version: 1,
                controller_version: "0.1.0".into(),
                agent: job,
                heartbeat_interval_ms: 5000,
                capabilities: vec![],
            }),
            Down::Refused {
                reason: "protocol 9 not supported; this controller speaks 1..=1".into(),
            },
            Down::HeartbeatAck { seq: 7 },
            Down::Cancel {
                job,
                reason: "cancelled by alice".into(),
            },
            Down::Renewed {
                cert_chain_der: vec![vec![9; 300], vec![8; 200]],
            },
            Down::RenewRefused {
                reason: "revoked".into(),
            },
        ];
        let jd = vec![
            JobDown::Assign(Box::new(Assignment {
                job,
                dispatch_id: "d1".into(),
                playbook_name: "ping".into(),
                playbook_path: "playbooks/ping.yml".into(),
                revision: RevisionRef {
                    digest: "ab".repeat(32),
                    size: 10240,
                    commit: Some("0123abcd".repeat(5)),
                    inventory_dir: "inventories/prod".into(),
                    inline: Some(vec![0; 10240]),
                },
                target: Target {
                    hostname: "web1".into(),
                    ip_address: "::1".into(),
                    ssh_port: 22,
                    ssh_user: "root".into(),
                    ssh_key_path: Some("/root/.ssh/id".into()),
                    host_vars_json: r#"{"ansible_connection":"local"}"#.into(),
                    groups: vec![vec!["prod".into(), "web".into()], vec!["dc_fra1".into()]],
                },
                vars_json: "{}".into(),
                launch_vars_json: "{}".into(),
                time_limit_secs: 3600,
                options: Default::default(),
                secrets: JobSecrets {
                    vars: Vec::new(),
                    ssh_key: Some(SshKeySecret {
                        key: "-----BEGIN OPENSSH PRIVATE KEY-----\n".into(),
                        passphrase: Some("pass phrase".into()),
                    }),
                    become_password: Some("sudo".into()),
                    vault: vec![VaultSecret {
                        id: "prod".into(),
                        password: "v".into(),
                    }],
                },
            })),
            JobDown::LogAck {
                job,
                through_line: 500,
            },
            JobDown::FinishAck { job },
            JobDown::ResultAck {
                job,
                through_seq: 7,
            },
        ];
        let ju = vec![
            JobUp::Accept { job },
            JobUp::Reject {
                job,
                reason: "at capacity".into(),
            },
            JobUp::Started {
                job,
                at_ms: 1_700_000_000_000,
            },
            JobUp::Logs(LogBatch {
                job,
                first_line: 1,
                lines: vec![LogLine {
                    at_ms: -1,
                    level: Level::Warning,
                    text: "[WARNING]: ünïcode".into(),
                }],
            }),
            JobUp::Results(crate::results::ResultBatch {
                job,
                first_seq: 1,
                results: vec![crate::results::TaskResult {
                    host: "web1".into(),
                    play: "site".into(),
                    task: "install".into(),
                    action: "ansible.builtin.apt".into(),
                    status: crate::results::TaskStatus::Failed,
                    started_ms: 1_700_000_000_000,
                    duration_ms: 1200,
                    message: Some("No package matching 'x'".into()),
                }],
            }),
            JobUp::Finished(Finished {
                job,
                status: FinalStatus::Failed,
                exit_code: Some(2),
                error: None,
                last_line: 10,
                last_result: 1,
                recap: Some(crate::results::PlayRecap {
                    ok: 3,
                    failed: 1,
                    ..Default::default()
                }),
            }),
        ];
        let er = vec![EnrollRequest {
            protocol_version: 1,
            secret: "s".into(),
            csr_der: vec![0; 64],
            hostname: "h".into(),
            labels: vec![],
        }];
        let eresp = vec![
            EnrollResponse::Enrolled {
                agent: job,
                name: "a".into(),
                cert_chain_der: vec![vec![1]],
                labels: vec![("dc".into(), "x".into())],
            },
            EnrollResponse::Refused {
                reason: "token expired".into(),
            },
        ];
        let stream_up = vec![
            StreamUp::Resume {
                job,
                dispatch_id: "d1".into(),
                acked_through: 3,
                results_acked: 2,
            },
            StreamUp::Fetch {
                digest: "cd".repeat(32),
                offset: 3 << 20,
            },
        ];
        let fetch_down = vec![
            FetchDown::Manifest(Manifest {
                size: (2 << 20) + 1,
                chunk_size: 1 << 20,
                chunks: vec![[7; 32], [0; 32], [255; 32]],
            }),
            FetchDown::Chunk {
                index: 2,
                data: vec![42],
            },
            FetchDown::Refused {
                reason: "no revision 'cdcd…' here".into(),
            },
        ];
        Samples {
            up,
            down,
            job_down: jd,
            job_up: ju,
            enroll: er,
            enrolled: eresp,
            stream_up,
            fetch_down,
        }
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msgs: &[T]) {
        for m in msgs {
            let frame = encode(m, MAX_FRAME).unwrap();
            let (back, used): (T, usize) = decode(&frame, MAX_FRAME).unwrap().unwrap();
            assert_eq!(&back, m);
            assert_eq!(used, frame.len());
            // Any strict prefix is "not yet a frame", never an error or a panic.
            for cut in 0..frame.len() {
                assert!(matches!(decode::<T>(&frame[..cut], MAX_FRAME), Ok(None)));
            }
        }
    }

    #[test]
    fn every_message_round_trips() {
        let s = samples();
        round_trip(&s.up);
        round_trip(&s.down);
        round_trip(&s.job_down);
        round_trip(&s.job_up);
        round_trip(&s.enroll);
        round_trip(&s.enrolled);
        round_trip(&s.stream_up);
        round_trip(&s.fetch_down);
    }

    #[tokio::test]
    async fn async_frames_round_trip_and_end_cleanly() {
        let up = samples().up;
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for m in &up {
                write_frame(&mut a, m, MAX_FRAME).await.unwrap();
            }
            up
        });
        let mut got = Vec::new();
        while let Some(m) = read_frame::<_, Up>(&mut b, MAX_FRAME).await.unwrap() {
            got.push(m);
        }
        assert_eq!(got, writer.await.unwrap());
    }

    #[tokio::test]
    async fn frame_reader_survives_cancellation_mid_frame() {
        let up = samples().up;
        // A one-byte pipe: every frame arrives a byte at a time, and each `next` is cancelled
        // by a timer many times over before its frame is whole.
        let (mut a, b) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for m in &up {
                for byte in encode(m, MAX_FRAME).unwrap() {
                    a.write_all(&[byte]).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            up
        });
        let mut reader = FrameReader::new(b, MAX_FRAME);
        let mut got = Vec::new();
        let mut cancelled = 0;
        loop {
            tokio::select! {
                m = reader.next::<Up>() => match m {
                    Some(m) => got.push(m.unwrap()),
                    None => break,
                },
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        assert_eq!(got, writer.await.unwrap());
        assert!(cancelled > 0);
        assert!(reader.next::<Up>().await.is_none());
    }

    #[tokio::test]
    async fn frame_reader_takes_several_frames_from_one_read_and_types_its_errors() {
        let mut bytes = Vec::new();
        for seq in 0..3 {
            bytes.extend(encode(&Up::Heartbeat { seq }, MAX_FRAME).unwrap());
        }
        let mut reader = FrameReader::new(&bytes[..], MAX_FRAME);
        for seq in 0..3 {
            assert_eq!(
                reader.next::<Up>().await.unwrap().unwrap(),
                Up::Heartbeat { seq }
            );
        }
        assert!(reader.next::<Up>().await.is_none());

        let frame = encode(&Up::Heartbeat { seq: 1 }, MAX_FRAME).unwrap();
        let mut reader = FrameReader::new(&frame[..frame.len() - 1], MAX_FRAME);
        assert!(matches!(
            reader.next::<Up>().await,
            Some(Err(FrameError::Truncated))
        ));
        assert!(reader.next::<Up>().await.is_none());

        let huge = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut reader = FrameReader::new(&huge[..], MAX_FRAME);
        assert!(matches!(
            reader.next::<Up>().await,
            Some(Err(FrameError::Oversized {
                len: 0xffff_ffff,
                ..
            }))
        ));
        assert!(reader.buf.capacity() == 0);

        let garbage = [0, 0, 0, 2, 0xee, 0xee];
        let mut reader = FrameReader::new(&garbage[..], MAX_FRAME);
        assert!(matches!(
            reader.next::<Up>().await,
            Some(Err(FrameError::Undecodable(_)))
        ));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_allocation() {
        // Announce 4 GiB - 1: reading must fail on the prefix alone.
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = read_frame::<_, Up>(&mut &bytes[..], MAX_FRAME)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Oversized {
                    len: 0xffff_ffff,
                    ..
                }
            ),
            "{err}"
        );
        let big = Up::Renew {
            csr_der: vec![0; 2048],
        };
        assert!(matches!(
            encode(&big, 1024),
            Err(FrameError::Oversized { .. })
        ));
    }

    #[tokio::test]
    async fn truncated_and_garbage_frames_are_typed_errors() {
        let frame = encode(&Up::Heartbeat { seq: 1 }, MAX_FRAME).unwrap();
        let err = read_frame::<_, Up>(&mut &frame[..frame.len() - 1], MAX_FRAME)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
        let err = read_frame::<_, Up>(&mut &frame[..2], MAX_FRAME)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
        let garbage = [0, 0, 0, 2, 0xee, 0xee];
        let err = read_frame::<_, Up>(&mut &garbage[..], MAX_FRAME)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Undecodable(_)), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Up>(&bytes, 1024);
            let _ = decode::<JobUp>(&bytes, 1024);
            let _ = decode::<JobDown>(&bytes, 1024);
            let _ = decode::<Down>(&bytes, 1024);
            let _ = decode::<EnrollRequest>(&bytes, 1024);
            let _ = decode::<StreamUp>(&bytes, 1024);
            let _ = decode::<FetchDown>(&bytes, 1024);
        }

        #[test]
        fn random_bodies_behind_valid_prefixes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            let _ = decode::<Up>(&frame, 1024);
            let _ = decode::<JobUp>(&frame, 1024);
        }
    }
}
