//! Where an agent command's output goes: the original's text lines, or with `--json` one
//! JSON document. A list is streamed as it is read (`{"FIELDS...,"KEY":[` items `]}`), so
//! a walk of millions of inodes needs no memory for them; a failure after the list began
//! closes it with an `"error"` member, so the document stays whole.

use super::format::JsonError;
use crate::error::{self, CmdError};
use serde::Serialize;
use std::io::Write;

/// An agent command's output.
pub struct Output<'a> {
    out: &'a mut dyn Write,
    json: bool,
    /// Inside a JSON list: whether an item was written.
    list: Option<bool>,
}

impl<'a> Output<'a> {
    pub fn new(out: &'a mut dyn Write, json: bool) -> Output<'a> {
        Output {
            out,
            json,
            list: None,
        }
    }

    /// Text output (nothing in JSON mode).
    pub fn text(&mut self, s: &str) -> Result<(), CmdError> {
        if !self.json {
            self.out.write_all(s.as_bytes())?;
        }
        Ok(())
    }

    /// The whole JSON document (nothing in text mode).
    pub fn doc<T: Serialize>(&mut self, doc: &T) -> Result<(), CmdError> {
        if self.json {
            serde_json::to_writer(&mut *self.out, doc).map_err(json_err)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Begins a JSON document of `head`'s fields and a list named `key`.
    pub fn begin_list<T: Serialize>(&mut self, head: &T, key: &str) -> Result<(), CmdError> {
        if !self.json {
            return Ok(());
        }
        let mut h = serde_json::to_string(head).map_err(json_err)?;
        // `{...}` becomes `{...,"key":[`.
        h.pop();
        if h.len() > 1 {
            h.push(',');
        }
        h.push_str(&serde_json::to_string(key).map_err(json_err)?);
        h.push_str(":[");
        self.out.write_all(h.as_bytes())?;
        self.list = Some(false);
        Ok(())
    }

    /// An item of the list.
    pub fn item<T: Serialize>(&mut self, item: &T) -> Result<(), CmdError> {
        if let Some(any) = self.list {
            if any {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *self.out, item).map_err(json_err)?;
            self.list = Some(true);
        }
        Ok(())
    }

    /// Ends the list and the document.
    pub fn end_list(&mut self) -> Result<(), CmdError> {
        if self.list.take().is_some() {
            self.out.write_all(b"]}\n")?;
        }
        Ok(())
    }

    /// In JSON mode, says that the command failed with `e`: as the `error` member of the
    /// list's document if one began, else as a document `{"error":{...}}`.
    pub fn fail(&mut self, name: &str, e: &CmdError) {
        if !self.json {
            return;
        }
        let (errno, message) = match e {
            CmdError::Errno { errno, .. } | CmdError::Said { errno, .. } => {
                (Some(*errno), error::strerror(*errno))
            }
            other => (None, error::message(other)),
        };
        let doc = JsonError {
            errno,
            name: errno.map(|n| format!("{:?}", nix::errno::Errno::from_raw(n))),
            message: format!("{name}: {message}"),
        };
        let Ok(body) = serde_json::to_string(&doc) else {
            return;
        };
        let text = match self.list.take() {
            Some(_) => format!("],\"error\":{body}}}\n"),
            None => format!("{{\"error\":{body}}}\n"),
        };
        let _ = self.out.write_all(text.as_bytes());
    }
}

fn json_err(e: serde_json::Error) -> CmdError {
    CmdError::Output(std::io::Error::other(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Head {
        index: &'static str,
    }

    #[derive(Serialize)]
    struct Empty {}

    fn run(json: bool, f: impl FnOnce(&mut Output) -> Result<(), CmdError>) -> String {
        let mut buf = Vec::new();
        let mut o = Output::new(&mut buf, json);
        if let Err(e) = f(&mut o) {
            o.fail("walk-inodes", &e);
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn lists_stream_into_one_document() {
        let s = run(true, |o| {
            o.text("not in json\n")?;
            o.begin_list(&Head { index: "meta_seq" }, "entries")?;
            o.item(&1)?;
            o.item(&2)?;
            o.end_list()
        });
        assert_eq!(s, "{\"index\":\"meta_seq\",\"entries\":[1,2]}\n");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["entries"][1], 2);
        let s = run(true, |o| {
            o.begin_list(&Empty {}, "inodes")?;
            o.end_list()
        });
        assert_eq!(s, "{\"inodes\":[]}\n");
        let s = run(false, |o| {
            o.text("a\n")?;
            o.begin_list(&Empty {}, "inodes")?;
            o.item(&1)?;
            o.end_list()?;
            o.doc(&Empty {})
        });
        assert_eq!(s, "a\n");
    }

    #[test]
    fn a_failure_keeps_the_document_whole() {
        let s = run(true, |o| {
            o.begin_list(&Head { index: "data_seq" }, "entries")?;
            o.item(&7)?;
            Err(CmdError::Errno {
                context: None,
                errno: libc_eperm(),
            })
        });
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["entries"][0], 7);
        assert_eq!(v["error"]["errno"], 1);
        assert_eq!(v["error"]["name"], "EPERM");
        assert_eq!(
            v["error"]["message"],
            "walk-inodes: Operation not permitted"
        );
        let s = run(true, |_| {
            Err(CmdError::Other("cannot open the volume".into()))
        });
        assert_eq!(
            s,
            "{\"error\":{\"errno\":null,\"name\":null,\"message\":\"walk-inodes: cannot open the volume\"}}\n"
        );
        assert_eq!(run(false, |_| Err(CmdError::Other("x".into()))), "");
    }

    fn libc_eperm() -> i32 {
        nix::errno::Errno::EPERM as i32
    }
}
