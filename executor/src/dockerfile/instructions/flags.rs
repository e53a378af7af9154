//! Instruction flags, as BuildKit's `bflag.go` parses them: `--name=value`,
//! bare `--name` for booleans, `--name=true|false` (any case), repeatable
//! string lists, `--` ends the flags.

/// The kind of a flag an instruction accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagKind {
    Bool,
    String,
    /// Repeatable; every value is kept.
    Strings,
}

/// A flag problem: the message, and the flag name to point the error at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FlagError {
    pub message: String,
    pub flag: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Bool(bool),
    String(String),
    Strings(Vec<String>),
}

/// The flags of one instruction after parsing.
#[derive(Debug, Default)]
pub(super) struct Flags {
    used: Vec<(&'static str, Value)>,
}

impl Flags {
    /// Parses `args` (the node's flags, e.g. `--from=build`) against the
    /// flags the instruction accepts.
    pub(super) fn parse(
        keyword: &str,
        args: &[String],
        accepted: &[(&'static str, FlagKind)],
    ) -> Result<Self, FlagError> {
        let mut flags = Self::default();
        for arg in args {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(FlagError {
                    message: format!("arg should start with -- : {arg}"),
                    flag: arg.clone(),
                    hint: None,
                });
            };
            if body.is_empty() {
                return Ok(flags);
            }
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let Some(&(name, kind)) = accepted.iter().find(|(n, _)| *n == name) else {
                return Err(unknown_flag(keyword, name, accepted));
            };
            let error = |message: String| FlagError {
                message,
                flag: name.to_string(),
                hint: None,
            };
            let previous = flags.used.iter().position(|(n, _)| *n == name);
            if previous.is_some() && kind != FlagKind::Strings {
                return Err(FlagError {
                    hint: Some(format!("give --{name} once")),
                    ..error(format!("duplicate flag specified: {name}"))
                });
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => Value::Bool(true),
                (FlagKind::Bool, Some("")) | (FlagKind::String | FlagKind::Strings, None) => {
                    return Err(FlagError {
                        hint: Some(match kind {
                            FlagKind::Bool => format!("write --{name} or --{name}=true|false"),
                            _ => format!("write --{name}=<value>"),
                        }),
                        ..error(format!("missing a value on flag: {name}"))
                    });
                }
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        return Err(FlagError {
                            hint: Some(format!("write --{name}, --{name}=true or --{name}=false")),
                            ..error(format!("expecting boolean value for flag {name}, not: {v}"))
                        });
                    }
                },
                (FlagKind::String, Some(v)) => Value::String(v.to_string()),
                (FlagKind::Strings, Some(v)) => {
                    if let Some(index) = previous {
                        if let Value::Strings(values) = &mut flags.used[index].1 {
                            values.push(v.to_string());
                        }
                        continue;
                    }
                    Value::Strings(vec![v.to_string()])
                }
            };
            flags.used.push((name, value));
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.used.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// A boolean flag's value; false when absent.
    pub(super) fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }

    /// A boolean flag's value, only when given.
    pub(super) fn opt_bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A string flag's value when given (possibly empty).
    pub(super) fn string(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// A string flag's value, an empty value counting as absent (BuildKit
    /// tests `flag.Value != ""`).
    pub(super) fn non_empty(&self, name: &str) -> Option<String> {
        self.string(name)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Every value of a repeatable flag, in order.
    pub(super) fn strings(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(Value::Strings(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

fn unknown_flag(keyword: &str, name: &str, accepted: &[(&'static str, FlagKind)]) -> FlagError {
    let mut hint = if accepted.is_empty() {
        format!("{keyword} accepts no flags")
    } else {
        let mut names: Vec<String> = accepted.iter().map(|(n, _)| format!("--{n}")).collect();
        names.sort();
        format!("{keyword} accepts {}", names.join(", "))
    };
    if let Some(close) =
        crate::dockerfile::suggest::nearest(name, accepted.iter().map(|(n, _)| *n), true)
    {
        hint = format!("did you mean --{close}? {hint}");
    }
    FlagError {
        message: format!("unknown flag: --{name}"),
        flag: name.to_string(),
        hint: Some(hint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPY: &[(&str, FlagKind)] = &[
        ("from", FlagKind::String),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Strings),
    ];

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        Flags::parse("COPY", &args, COPY)
    }

    #[test]
    fn values_and_defaults() {
        let f = parse(&["--from=build", "--link", "--exclude=a", "--exclude=b"]).unwrap();
        assert_eq!(f.string("from"), Some("build"));
        assert!(f.bool("link"));
        assert_eq!(f.opt_bool("link"), Some(true));
        assert_eq!(f.strings("exclude"), ["a", "b"]);
        let f = parse(&[]).unwrap();
        assert!(!f.bool("link"));
        assert_eq!(f.opt_bool("link"), None);
        assert_eq!(f.string("from"), None);
        assert!(f.strings("exclude").is_empty());
    }

    #[test]
    fn booleans_take_any_case() {
        assert!(parse(&["--link=TRUE"]).unwrap().bool("link"));
        assert_eq!(
            parse(&["--link=False"]).unwrap().opt_bool("link"),
            Some(false)
        );
        let e = parse(&["--link=yes"]).unwrap_err();
        assert_eq!(e.message, "expecting boolean value for flag link, not: yes");
        let e = parse(&["--link="]).unwrap_err();
        assert_eq!(e.message, "missing a value on flag: link");
    }

    #[test]
    fn empty_string_values_are_kept() {
        let f = parse(&["--from="]).unwrap();
        assert_eq!(f.string("from"), Some(""));
        assert_eq!(f.non_empty("from"), None);
    }

    #[test]
    fn errors() {
        let e = parse(&["--from"]).unwrap_err();
        assert_eq!(e.message, "missing a value on flag: from");
        assert_eq!(e.flag, "from");
        let e = parse(&["--from=a", "--from=b"]).unwrap_err();
        assert_eq!(e.message, "duplicate flag specified: from");
        let e = parse(&["--link", "--link"]).unwrap_err();
        assert_eq!(e.message, "duplicate flag specified: link");
        let e = parse(&["--exclude"]).unwrap_err();
        assert_eq!(e.message, "missing a value on flag: exclude");
        let e = parse(&["--form=a"]).unwrap_err();
        assert_eq!(e.message, "unknown flag: --form");
        assert_eq!(
            e.hint.as_deref(),
            Some("did you mean --from? COPY accepts --exclude, --from, --link")
        );
        let e = parse(&["--bogus"]).unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("COPY accepts --exclude, --from, --link")
        );
        let e = Flags::parse("ENV", &["--x".to_string()], &[]).unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("ENV accepts no flags"));
        let e = parse(&["-x"]).unwrap_err();
        assert_eq!(e.message, "arg should start with -- : -x");
    }

    #[test]
    fn double_dash_stops() {
        let f = parse(&["--link", "--", "--bogus"]).unwrap();
        assert!(f.bool("link"));
    }
}
