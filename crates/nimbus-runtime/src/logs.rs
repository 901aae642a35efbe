//! Capturing an environment's output and shaping invocation logs.

use std::io::ErrorKind;
use std::sync::Mutex;

use nimbus_sandbox::OutputPipe;

/// Longest log line kept, as CloudWatch Logs caps events (256 KB).
const MAX_LINE: usize = 256 * 1024;
/// Most bytes buffered between two invocations; beyond this, output is
/// dropped and a marker says so (a runaway background thread must not eat
/// the server's memory).
const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// One captured line and when it was read, in epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub ts_ms: i64,
    pub text: String,
}

/// Lines of an invocation for the log sink: the log group and stream they
/// belong to and the lines in order.
#[derive(Debug, Clone)]
pub struct LogBatch {
    pub group: String,
    pub stream: String,
    pub lines: Vec<LogLine>,
    /// The function's execution role and its session name (the function),
    /// whose permissions decide whether the logs may be written.
    pub role: String,
    pub session: String,
}

#[derive(Default)]
struct State {
    partial: Vec<u8>,
    lines: Vec<LogLine>,
    buffered: usize,
    dropped: bool,
    eof: bool,
}

/// The environment's merged stdout/stderr, split into lines as they arrive.
pub(crate) struct Capture {
    pipe: OutputPipe,
    state: Mutex<State>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Capture {
    pub(crate) fn new(pipe: OutputPipe) -> Self {
        Self {
            pipe,
            state: Mutex::new(State::default()),
        }
    }

    /// Reads until the pipe closes; run as the environment's reader task.
    pub(crate) async fn pump(&self) {
        loop {
            if self.pipe.readable().await.is_err() || self.drain() {
                return;
            }
        }
    }

    /// Reads everything the pipe holds right now without waiting. Called
    /// when a response arrives, so what the function printed before
    /// answering is in its log before END. Returns true at end of file.
    pub(crate) fn drain(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.pipe.try_read(&mut buf) {
                Ok(0) => {
                    st.eof = true;
                    flush_partial(&mut st);
                    return true;
                }
                Ok(n) => push_bytes(&mut st, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return st.eof,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    st.eof = true;
                    return true;
                }
            }
        }
    }

    /// Takes the lines captured so far, including an unterminated last one.
    pub(crate) fn take(&self) -> Vec<LogLine> {
        self.drain();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        flush_partial(&mut st);
        st.buffered = 0;
        st.dropped = false;
        std::mem::take(&mut st.lines)
    }
}

fn push_bytes(st: &mut State, mut bytes: &[u8]) {
    while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
        st.partial.extend_from_slice(&bytes[..pos]);
        let raw = std::mem::take(&mut st.partial);
        emit_line(st, &raw);
        bytes = &bytes[pos + 1..];
    }
    st.partial.extend_from_slice(bytes);
    if st.partial.len() >= MAX_LINE {
        flush_partial(st);
    }
}

fn flush_partial(st: &mut State) {
    if !st.partial.is_empty() {
        let raw = std::mem::take(&mut st.partial);
        emit_line(st, &raw);
    }
}

fn emit_line(st: &mut State, raw: &[u8]) {
    let text = String::from_utf8_lossy(raw)
        .trim_end_matches('\r')
        .to_string();
    if st.buffered + text.len() > MAX_BUFFERED {
        if !st.dropped {
            st.dropped = true;
            st.lines.push(LogLine {
                ts_ms: now_ms(),
                text: "[nimbus] output dropped: more than 8 MB logged in one invocation".into(),
            });
        }
        return;
    }
    st.buffered += text.len();
    st.lines.push(LogLine {
        ts_ms: now_ms(),
        text,
    });
}

/// The last `max` bytes of an invocation's log text, cut at a line or
/// character boundary, as `LogType: Tail` returns it.
pub(crate) fn tail(lines: &[LogLine], max: usize) -> String {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.text);
        text.push('\n');
    }
    if text.len() <= max {
        return text;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str) -> LogLine {
        LogLine {
            ts_ms: 0,
            text: t.into(),
        }
    }

    #[test]
    fn tail_keeps_the_end() {
        let lines = vec![line("START"), line("hello"), line("END")];
        assert_eq!(tail(&lines, 4096), "START\nhello\nEND\n");
        assert_eq!(tail(&lines, 4), "END\n");
        let wide = vec![line("ééé")];
        assert_eq!(tail(&wide, 4), "é\n");
    }

    #[test]
    fn bytes_are_split_into_lines() {
        let mut st = State::default();
        push_bytes(&mut st, b"a\nb");
        push_bytes(&mut st, b"c\r\n\nd");
        flush_partial(&mut st);
        let texts: Vec<_> = st.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "bc", "", "d"]);
    }
}
