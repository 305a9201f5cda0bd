//! Celery 5.7's `celery.utils.saferepr.saferepr`, for JSON data: what
//! Celery puts in a message's `argsrepr` and `kwargsrepr` headers
//! (`saferepr(args, 1024, maxlevels=3)`), shown by Flower, events and
//! worker logs.
//!
//! It is not Python's `repr`: strings are always in single quotes with only
//! `'` escaped (a newline stays a raw newline), containers nested three
//! deep show as `[...]`, and output is cut while streaming: each token is
//! measured against what is left of the 1024 characters, the one that
//! crosses the limit is shortened (`'abc...'`, `226...`), then `, ...` and
//! the brackets still open. A port of that streaming, token for token;
//! `tests/fixtures/saferepr` holds Celery's own output to compare against.

use serde_json::{Map, Value};

use crate::wire::celery::python_float_repr;

/// Celery's `argsrepr_maxsize` and `kwargsrepr_maxsize`.
pub const MAX_LEN: usize = 1024;
/// Celery's `task_repr_maxlevels` default.
pub const MAX_LEVELS: usize = 3;

/// `saferepr(value, 1024, maxlevels=3)` of a JSON value as Python holds it
/// after `json.loads` (lists, dicts, str, int, float, bool, None).
pub fn saferepr(value: &Value) -> String {
    render(Piece::Value(value))
}

/// `saferepr(list(items), 1024, maxlevels=3)`: the args celery beat
/// passes.
pub fn saferepr_items(items: &[Value]) -> String {
    render(Piece::List(items))
}

/// `saferepr(tuple(items), 1024, maxlevels=3)`: the args of `apply_async`
/// and `delay`, which pass a tuple.
pub fn saferepr_tuple(items: &[Value]) -> String {
    render(Piece::Tuple(items))
}

/// `saferepr(kwargs, 1024, maxlevels=3)` of a kwargs map.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    render(Piece::Map(kwargs))
}

/// A literal piece of syntax; `direction` as in Celery's `_literal`: +1
/// opens a container, -1 closes one. (Celery's `truncate` flag, which
/// tells separators from brackets when closing what is open at the cut, is
/// the frame stack here.)
#[derive(Debug, Clone, Copy)]
struct Literal {
    text: &'static str,
    direction: i8,
}

const fn lit(text: &'static str, direction: i8) -> Literal {
    Literal { text, direction }
}

const KV_SEP: Literal = lit(": ", 0);
const LIST_SEP: Literal = lit(", ", 0);

#[derive(Debug)]
enum Token<'a> {
    Literal(Literal),
    /// A string (or dict key): quoted and cut to what is left.
    Quoted(&'a str),
    /// A number, `True`, `False` or `None`: cut to what is left.
    Text(String),
}

#[derive(Clone, Copy)]
enum Piece<'a> {
    Token(Literal),
    Key(&'a str),
    Value(&'a Value),
    Tuple(&'a [Value]),
    List(&'a [Value]),
    Map(&'a Map<String, Value>),
}

enum Children<'a> {
    List(std::slice::Iter<'a, Value>),
    Map(serde_json::map::Iter<'a>),
}

/// An open container: what is left of it and how it closes.
struct Frame<'a> {
    children: Children<'a>,
    end: Literal,
    first: bool,
    /// Pieces of the current child still to come (separator, key, value).
    queued: Vec<Piece<'a>>,
}

/// Celery's `reprstream`: the tokens of a value, depth first, containers
/// at `MAX_LEVELS` shown as one `[...]` literal.
struct Stream<'a> {
    root: Option<Piece<'a>>,
    stack: Vec<Frame<'a>>,
}

impl<'a> Stream<'a> {
    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let piece = match self.root.take() {
                Some(p) => p,
                None => {
                    let frame = self.stack.last_mut()?;
                    match frame.queued.pop() {
                        Some(p) => p,
                        None => match next_child(frame) {
                            Some(()) => continue,
                            None => {
                                let end = frame.end;
                                self.stack.pop();
                                return Some(Token::Literal(end));
                            }
                        },
                    }
                }
            };
            return Some(match piece {
                Piece::Token(l) => Token::Literal(l),
                Piece::Key(k) => Token::Quoted(k),
                Piece::Value(v) => self.value(v),
                Piece::List(items) => self.open("[", "]", Children::List(items.iter())),
                Piece::Map(m) => self.open("{", "}", Children::Map(m.iter())),
                Piece::Tuple(items) => {
                    let end = if items.len() == 1 { ",)" } else { ")" };
                    self.open("(", end, Children::List(items.iter()))
                }
            });
        }
    }

    fn value(&mut self, v: &'a Value) -> Token<'a> {
        match v {
            Value::Null => Token::Text("None".into()),
            Value::Bool(true) => Token::Text("True".into()),
            Value::Bool(false) => Token::Text("False".into()),
            Value::Number(n) => Token::Text(python_str_number(&n.to_string())),
            Value::String(s) => Token::Quoted(s),
            Value::Array(a) => self.open("[", "]", Children::List(a.iter())),
            Value::Object(m) => self.open("{", "}", Children::Map(m.iter())),
        }
    }

    /// Opens a container, or shows it as `[...]` (a literal, so the limit
    /// cannot cut it in half) when it is `MAX_LEVELS` deep.
    fn open(
        &mut self,
        start: &'static str,
        end: &'static str,
        children: Children<'a>,
    ) -> Token<'a> {
        if self.stack.len() >= MAX_LEVELS {
            let folded = match start {
                "[" => "[...]",
                "{" => "{...}",
                _ => "(...)",
            };
            return Token::Literal(lit(folded, 0));
        }
        self.stack.push(Frame {
            children,
            end: lit(end, -1),
            first: true,
            queued: Vec::new(),
        });
        Token::Literal(lit(start, 1))
    }
}

/// Queues the pieces of a frame's next child (in reverse: popped from the
/// back); `None` when there is none.
fn next_child(frame: &mut Frame<'_>) -> Option<()> {
    let sep = !std::mem::replace(&mut frame.first, false);
    match &mut frame.children {
        Children::List(items) => {
            let v = items.next()?;
            frame.queued.push(Piece::Value(v));
        }
        Children::Map(entries) => {
            let (k, v) = entries.next()?;
            frame
                .queued
                .extend([Piece::Value(v), Piece::Token(KV_SEP), Piece::Key(k)]);
        }
    }
    if sep {
        frame.queued.push(Piece::Token(LIST_SEP));
    }
    Some(())
}

/// Celery's `_saferepr`: joins the tokens until `MAX_LEN` characters are
/// used, then closes what is open.
fn render(root: Piece<'_>) -> String {
    let mut stream = Stream {
        root: Some(root),
        stack: Vec::new(),
    };
    let mut out = String::new();
    let mut left = MAX_LEN as i64;
    while let Some(token) = stream.next() {
        if left <= 0 {
            if let Token::Literal(l) = &token
                && l.direction < 0
            {
                // The cut value was the last of its container: close it.
                out.push_str(l.text);
                continue;
            }
            out.push_str(", ...");
            // A container opened at the cut is not shown, so neither is its
            // closing bracket; every one opened before it is closed.
            let opened_now = matches!(token, Token::Literal(l) if l.direction > 0);
            let open = stream.stack.len() - usize::from(opened_now);
            for frame in stream.stack[..open].iter().rev() {
                out.push_str(frame.end.text);
            }
            break;
        }
        let text = match token {
            Token::Literal(l) => l.text.to_string(),
            Token::Quoted(s) => format!("'{}'", truncate(s, left).replace('\'', "\\'")),
            Token::Text(t) => truncate(&t, left),
        };
        left -= text.chars().count() as i64;
        out.push_str(&text);
    }
    out
}

/// Celery's `truncate(s, maxlen)`: at `maxlen` characters or more, the
/// first `maxlen` up to their last space, then `...`.
fn truncate(s: &str, maxlen: i64) -> String {
    let maxlen = usize::try_from(maxlen).unwrap_or(0);
    if maxlen == 0 || s.chars().count() < maxlen {
        return s.to_string();
    }
    let head: String = s.chars().take(maxlen).collect();
    let kept = head
        .rsplit_once(' ')
        .map_or(head.as_str(), |(before, _)| before);
    format!("{kept}...")
}

/// `str()` of the number Python's `json.loads` makes of a JSON number's
/// text: an `int` of any size, or a `float` (`inf` beyond its range).
fn python_str_number(text: &str) -> String {
    crate::wire::celery::python_number(text, |f| {
        if f.is_nan() {
            "nan".into()
        } else if f.is_infinite() {
            if f > 0.0 { "inf" } else { "-inf" }.into()
        } else {
            python_float_repr(f)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cases_the_review_found() {
        assert_eq!(saferepr(&json!(["it's"])), r"['it\'s']");
        assert_eq!(saferepr(&json!(["a\nb"])), "['a\nb']");
        assert_eq!(saferepr(&json!([[[[1]]]])), "[[[[...]]]]");
        let ints: Vec<i64> = (0..400).collect();
        assert!(saferepr(&json!(ints)).ends_with(", 225, 226..., ...]"));
        assert_eq!(saferepr_tuple(&[json!(2), json!(3)]), "(2, 3)");
        assert_eq!(saferepr_tuple(&[json!(1)]), "(1,)");
        assert_eq!(saferepr_tuple(&[]), "()");
    }

    /// Celery's own output (tests/fixtures/saferepr/generate.py run with
    /// Celery 5.7) for every case of the corpus, as a list and as a tuple.
    #[test]
    fn matches_celery_5_7_saferepr_on_the_whole_corpus() {
        let fixture: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/saferepr/cases.json")).unwrap();
        assert_eq!(fixture["maxlen"], MAX_LEN);
        assert_eq!(fixture["maxlevels"], MAX_LEVELS);
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() > 50);
        let mut wrong = Vec::new();
        for case in cases {
            let text = case["json"].as_str().unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            let mut check = |ours: String, want: &Value| {
                if want.as_str() != Some(ours.as_str()) {
                    wrong.push(format!("{text:.80}\n  celery: {want}\n  ours:   {ours:?}"));
                }
            };
            check(saferepr(&value), &case["repr"]);
            if let Value::Array(items) = &value {
                check(saferepr_items(items), &case["repr"]);
                check(saferepr_tuple(items), &case["tuple_repr"]);
            }
            if let Value::Object(m) = &value {
                check(kwargs_repr(m), &case["repr"]);
            }
        }
        assert!(
            wrong.is_empty(),
            "{} differ:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}
