//! RUN's `--mount`, `--network` and `--security` values, as BuildKit's
//! `commands_runmount.go`, `commands_runnetwork.go` and
//! `commands_runsecurity.go` read them, plus the defaults BuildKit's
//! dispatcher fills in (secret and ssh ids and targets, cache ids).

use super::super::gopath;
use super::super::shell::ShellError;
use super::super::suggest::nearest as suggest;
use super::{Mount, MountKind, NetworkMode, SecurityMode, Sharing};

/// How a `--mount` value is read.
pub(super) enum Mode<'a> {
    /// At parse time, before expansion: values holding a `$` are kept raw
    /// (string options) or left for later (typed options), and checks that
    /// depend on them wait for [`Mode::Expand`]. BuildKit itself checks only
    /// `from` at this point; here every value without a `$` is checked at once.
    Parse,
    /// With every value expanded, as BuildKit's dispatcher does.
    Expand(&'a dyn Fn(&str) -> Result<String, ShellError>),
}

/// A `--mount` problem.
#[derive(Debug)]
pub(super) enum MountError {
    /// The value is wrong; `near` is the text to point the error at.
    Invalid {
        message: String,
        hint: Option<String>,
        near: String,
    },
    /// Expanding `word` failed.
    Shell { word: String, error: ShellError },
}

fn invalid(message: impl Into<String>, near: &str) -> MountError {
    MountError::Invalid {
        message: message.into(),
        hint: None,
        near: near.to_string(),
    }
}

fn invalid_hint(message: impl Into<String>, hint: impl Into<String>, near: &str) -> MountError {
    MountError::Invalid {
        message: message.into(),
        hint: Some(hint.into()),
        near: near.to_string(),
    }
}

const MOUNT_TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];
const SHARING: [&str; 3] = ["shared", "private", "locked"];
const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

impl MountKind {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "bind" => Self::Bind,
            "cache" => Self::Cache,
            "tmpfs" => Self::Tmpfs,
            "secret" => Self::Secret,
            "ssh" => Self::Ssh,
            _ => return None,
        })
    }
}

/// Parses one `--mount` value (BuildKit `parseMount`).
pub(super) fn parse_mount(spec: &str, mode: &Mode<'_>) -> Result<Mount, MountError> {
    let fields = csv_fields(spec)
        .map_err(|message| invalid(format!("failed to parse csv mounts: {message}"), spec))?;
    let mut m = Mount {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        read_only: false,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
        size: None,
    };
    let mut read_only_auto = true;
    // A value left for expansion: checks that depend on it wait.
    let mut deferred = false;
    let mut kind_deferred = false;

    for field in &fields {
        let (key, raw) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(raw) = raw else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    read_only_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    read_only_auto = false;
                }
                "required" => {
                    if kind_deferred || matches!(m.kind, MountKind::Secret | MountKind::Ssh) {
                        m.required = true;
                    } else {
                        return Err(unexpected_key_for_type(&key, m.kind, field));
                    }
                }
                _ => {
                    return Err(invalid_hint(
                        format!("invalid field '{field}' must be a key=value pair"),
                        "write key=value; only ro, rw and required stand alone",
                        field,
                    ));
                }
            }
            continue;
        };

        let value = match mode {
            Mode::Expand(expand) => expand(raw).map_err(|error| MountError::Shell {
                word: raw.to_string(),
                error,
            })?,
            Mode::Parse => {
                if key == "from" {
                    if let Some(i) = raw.find('$') {
                        if i != raw.len() - 1 {
                            return Err(invalid_hint(
                                "'from' doesn't support variable expansion, define alias stage instead",
                                "declare `FROM ${VAR} AS alias` and mount `from=alias`",
                                field,
                            ));
                        }
                    }
                } else if raw.contains('$') {
                    deferred = true;
                    match key.as_str() {
                        "type" => kind_deferred = true,
                        "source" | "src" => m.source = Some(raw.to_string()),
                        "target" | "dst" | "destination" => m.target = Some(raw.to_string()),
                        "id" => m.id = Some(raw.to_string()),
                        "env" => m.env = Some(raw.to_string()),
                        _ if MOUNT_KEYS.contains(&key.as_str()) => {}
                        _ => return Err(unexpected_key(&key, field)),
                    }
                    continue;
                }
                raw.to_string()
            }
        };

        match key.as_str() {
            "type" => {
                let lower = value.to_lowercase();
                let Some(kind) = MountKind::parse(&lower) else {
                    let mut hint = format!("mount types: {}", MOUNT_TYPES.join(", "));
                    if let Some(close) = suggest(&value, MOUNT_TYPES, true) {
                        hint = format!("did you mean {close}? {hint}");
                    }
                    return Err(invalid_hint(
                        format!("unsupported mount type {}", quote(&value)),
                        hint,
                        field,
                    ));
                };
                m.kind = kind;
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.read_only =
                    parse_go_bool(&value).ok_or_else(|| invalid_value_for(&key, &value, field))?;
                read_only_auto = false;
            }
            "readwrite" | "rw" => {
                let rw =
                    parse_go_bool(&value).ok_or_else(|| invalid_value_for(&key, &value, field))?;
                m.read_only = !rw;
                read_only_auto = false;
            }
            "required" => {
                if !kind_deferred && !matches!(m.kind, MountKind::Secret | MountKind::Ssh) {
                    return Err(unexpected_key_for_type(&key, m.kind, field));
                }
                m.required =
                    parse_go_bool(&value).ok_or_else(|| invalid_value_for(&key, &value, field))?;
            }
            "size" => {
                if !kind_deferred && m.kind != MountKind::Tmpfs {
                    return Err(unexpected_key_for_type(&key, m.kind, field));
                }
                m.size = Some(ram_in_bytes(&value).ok_or_else(|| MountError::Invalid {
                    message: format!("invalid value for {key}: {value}"),
                    hint: Some("write a size such as 64m, 1g or 512k".into()),
                    near: field.clone(),
                })?);
            }
            "id" => m.id = Some(value),
            "sharing" => {
                let lower = value.to_lowercase();
                m.sharing = Some(match lower.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        let mut hint = format!("sharing modes: {}", SHARING.join(", "));
                        if let Some(close) = suggest(&value, SHARING, true) {
                            hint = format!("did you mean {close}? {hint}");
                        }
                        return Err(invalid_hint(
                            format!("unsupported sharing value {}", quote(&value)),
                            hint,
                            field,
                        ));
                    }
                });
            }
            "mode" => {
                m.mode = Some(parse_go_uint32(&value, 8).ok_or_else(|| {
                    invalid_hint(
                        format!("invalid value {value} for mode"),
                        "write an octal mode such as 0644",
                        field,
                    )
                })?);
            }
            "uid" | "gid" => {
                let id = parse_go_uint32(&value, 10).ok_or_else(|| {
                    invalid_hint(
                        format!("invalid value {value} for {key}"),
                        "write a numeric id",
                        field,
                    )
                })?;
                if key == "uid" {
                    m.uid = Some(id);
                } else {
                    m.gid = Some(id);
                }
            }
            "env" => m.env = Some(value),
            _ => return Err(unexpected_key(&key, field)),
        }
    }

    if deferred {
        return Ok(m);
    }

    let file_info_allowed = matches!(
        m.kind,
        MountKind::Secret | MountKind::Ssh | MountKind::Cache
    );
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(invalid_hint(
                    format!(
                        "{name} not allowed for {} type mounts",
                        quote(m.kind.as_str())
                    ),
                    "mode, uid and gid apply to cache, secret and ssh mounts",
                    &format!("{name}="),
                ));
            }
        }
    }
    if read_only_auto {
        m.read_only = !matches!(m.kind, MountKind::Cache | MountKind::Tmpfs);
    }
    let source = m.source.as_deref().unwrap_or_default();
    let target = m.target.as_deref().unwrap_or_default();
    let id = m.id.as_deref().unwrap_or_default();
    if m.kind == MountKind::Secret {
        if m.from.as_deref().is_some_and(|f| !f.is_empty()) {
            return Err(invalid("secret mount should not have a from", "from="));
        }
        if m.sharing.is_some() {
            return Err(invalid(
                "secret mount should not define sharing",
                "sharing=",
            ));
        }
        if source.is_empty() && target.is_empty() && id.is_empty() {
            return Err(invalid_hint(
                "invalid secret mount. one of source, target required",
                "name the secret with id=<id>",
                spec,
            ));
        }
        if !source.is_empty() && !id.is_empty() {
            return Err(invalid("both source and id can't be set", spec));
        }
    }
    if m.sharing.is_some() && m.kind != MountKind::Cache {
        return Err(invalid(
            format!("invalid cache sharing set for {} mount", m.kind.as_str()),
            "sharing=",
        ));
    }
    if m.kind == MountKind::Ssh && !source.is_empty() {
        return Err(invalid("ssh does not support source", "source"));
    }
    apply_defaults(&mut m);
    Ok(m)
}

/// The defaults BuildKit's dispatcher applies (`dispatchSecret`,
/// `dispatchSSH`, `dispatchRunMounts`).
fn apply_defaults(m: &mut Mount) {
    let empty_to_none = |v: &mut Option<String>| {
        if v.as_deref() == Some("") {
            *v = None;
        }
    };
    empty_to_none(&mut m.source);
    empty_to_none(&mut m.target);
    empty_to_none(&mut m.id);
    empty_to_none(&mut m.from);
    match m.kind {
        MountKind::Cache => {
            if m.sharing.is_none() {
                m.sharing = Some(Sharing::Shared);
            }
            if m.id.is_none() {
                m.id = Some(gopath::clean(m.target.as_deref().unwrap_or_default()));
            }
        }
        MountKind::Secret => {
            let id = match (&m.source, &m.id, &m.target) {
                (Some(source), _, _) => source.clone(),
                (None, Some(id), _) => id.clone(),
                (None, None, Some(target)) => base_name(target),
                (None, None, None) => String::new(),
            };
            if m.env.is_none() && m.target.is_none() {
                m.target = Some(format!("/run/secrets/{}", base_name(&id)));
            }
            m.id = Some(id);
        }
        MountKind::Ssh => {
            if m.id.is_none() {
                m.id = Some("default".to_string());
            }
        }
        MountKind::Bind | MountKind::Tmpfs => {}
    }
}

/// Gives ssh mounts without a target BuildKit's socket paths
/// (`/run/buildkit/ssh_agent.<n>`, n counting the RUN's ssh mounts).
pub(super) fn number_ssh_sockets(mounts: &mut [Mount]) {
    for (n, m) in mounts
        .iter_mut()
        .filter(|m| m.kind == MountKind::Ssh)
        .enumerate()
    {
        if m.target.is_none() {
            m.target = Some(format!("/run/buildkit/ssh_agent.{n}"));
        }
    }
}

/// `--network` (BuildKit `commands_runnetwork.go`).
pub(super) fn parse_network(value: &str) -> Result<NetworkMode, (String, String)> {
    match value {
        "default" => Ok(NetworkMode::Default),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        _ => Err((
            format!("invalid network mode {}", quote(value)),
            "network modes: default, none, host".to_string(),
        )),
    }
}

/// `--security` (BuildKit `commands_runsecurity.go`).
pub(super) fn parse_security(value: &str) -> Result<SecurityMode, (String, String)> {
    match value {
        "sandbox" => Ok(SecurityMode::Sandbox),
        "insecure" => Ok(SecurityMode::Insecure),
        _ => Err((
            format!("security {} is not valid", quote(value)),
            "security modes: sandbox, insecure".to_string(),
        )),
    }
}

fn quote(s: &str) -> String {
    super::super::parser::go_quote(s)
}

fn unexpected_key(key: &str, field: &str) -> MountError {
    let mut hint = format!("mount options: {}", MOUNT_KEYS.join(", "));
    if let Some(close) = suggest(key, MOUNT_KEYS, true) {
        hint = format!("did you mean {close}? {hint}");
    }
    invalid_hint(format!("unexpected key '{key}' in '{field}'"), hint, field)
}

fn unexpected_key_for_type(key: &str, kind: MountKind, field: &str) -> MountError {
    let hint = match key {
        "size" => "size applies to tmpfs mounts; put type= first",
        _ => "required applies to secret and ssh mounts; put type= first",
    };
    invalid_hint(
        format!("unexpected key '{key}' for mount type '{}'", kind.as_str()),
        hint,
        field,
    )
}

fn invalid_value_for(key: &str, value: &str, field: &str) -> MountError {
    invalid_hint(
        format!("invalid value for {key}: {value}"),
        "write true or false",
        field,
    )
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, radix, 32)`: digits only, no sign or prefix.
fn parse_go_uint32(s: &str, radix: u32) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(s, radix).ok()
}

/// docker/go-units `RAMInBytes`: `^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$`,
/// binary multiples.
fn ram_in_bytes(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = digits(0);
    if i == 0 {
        return None;
    }
    while i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1 + digits(i + 1);
    }
    let number: f64 = s[..i].parse().ok()?;
    let mut rest = &b[i..];
    if let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    let mut multiplier: f64 = 1.0;
    if let [unit, tail @ ..] = rest {
        let power = match unit.to_ascii_lowercase() {
            b'k' => Some(1),
            b'm' => Some(2),
            b'g' => Some(3),
            b't' => Some(4),
            b'p' => Some(5),
            _ => None,
        };
        if let Some(power) = power {
            multiplier = 1024f64.powi(power);
            rest = tail;
        }
    }
    if let [b'i' | b'I', tail @ ..] = rest {
        rest = tail;
    }
    if let [b'b' | b'B', tail @ ..] = rest {
        rest = tail;
    }
    if !rest.is_empty() {
        return None;
    }
    let bytes = number * multiplier;
    // 2^63 as f64; larger values have no int64 in Go.
    if !bytes.is_finite() || bytes >= 9_223_372_036_854_775_808.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(bytes as u64)
}

/// Splits a single-line CSV record as Go's `encoding/csv` (and BuildKit's
/// `csvvalue`) does: `,` separates, `"` quotes a whole field, `""` is a quote
/// inside quotes.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut rest = s;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut field = String::new();
            let mut chars = quoted.char_indices().peekable();
            loop {
                let Some((i, c)) = chars.next() else {
                    return Err("extraneous or missing \" in quoted-field".into());
                };
                if c != '"' {
                    field.push(c);
                    continue;
                }
                match chars.peek() {
                    Some(&(_, '"')) => {
                        chars.next();
                        field.push('"');
                    }
                    Some(&(_, ',')) => {
                        fields.push(field);
                        rest = &quoted[i + 2..];
                        break;
                    }
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let field = &rest[..end];
            if field.contains('"') {
                return Err("bare \" in non-quoted-field".into());
            }
            fields.push(field.to_string());
            if end == rest.len() {
                return Ok(fields);
            }
            rest = &rest[end + 1..];
        }
    }
}

/// Go's `path.Base`.
fn base_name(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Mount, String> {
        parse_mount(spec, &Mode::Expand(&|w| Ok(w.to_string()))).map_err(|e| match e {
            MountError::Invalid { message, .. } => message,
            MountError::Shell { error, .. } => error.message,
        })
    }

    #[test]
    fn bind_defaults_read_only() {
        let m = parse("target=/src,source=/app,from=build").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert_eq!(m.target.as_deref(), Some("/src"));
        assert_eq!(m.source.as_deref(), Some("/app"));
        assert_eq!(m.from.as_deref(), Some("build"));
        assert!(m.read_only);
        let m = parse("type=bind,dst=/src,rw").unwrap();
        assert!(!m.read_only);
        let m = parse("type=bind,destination=/src,readwrite=true").unwrap();
        assert!(!m.read_only);
        let m = parse("type=BIND,src=a,target=/b,ro=false").unwrap();
        assert!(!m.read_only);
    }

    #[test]
    fn cache_defaults() {
        let m = parse("type=cache,target=/root/.cache/../.cache/").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert!(!m.read_only);
        assert_eq!(m.sharing, Some(Sharing::Shared));
        assert_eq!(m.id.as_deref(), Some("/root/.cache"));
        let m = parse("type=cache,target=/c,id=x,sharing=LOCKED,mode=0700,uid=1000,gid=100,ro")
            .unwrap();
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.id.as_deref(), Some("x"));
        assert_eq!(m.mode, Some(0o700));
        assert_eq!(m.uid, Some(1000));
        assert_eq!(m.gid, Some(100));
        assert!(m.read_only);
        let m = parse("type=cache,target=/c,sharing=private").unwrap();
        assert_eq!(m.sharing, Some(Sharing::Private));
    }

    #[test]
    fn tmpfs_size() {
        let m = parse("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.kind, MountKind::Tmpfs);
        assert!(!m.read_only);
        assert_eq!(m.size, Some(64 * 1024 * 1024));
        assert_eq!(
            parse("type=tmpfs,target=/t,size=1.5KiB").unwrap().size,
            Some(1536)
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,size=100").unwrap().size,
            Some(100)
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,size=2 GB").unwrap().size,
            Some(2 << 30)
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,size=lots").unwrap_err(),
            "invalid value for size: lots"
        );
        assert_eq!(
            parse("type=cache,target=/t,size=1m").unwrap_err(),
            "unexpected key 'size' for mount type 'cache'"
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,mode=0700").unwrap_err(),
            "mode not allowed for \"tmpfs\" type mounts"
        );
    }

    #[test]
    fn secret_defaults() {
        let m = parse("type=secret,id=aws").unwrap();
        assert_eq!(m.kind, MountKind::Secret);
        assert!(m.read_only);
        assert_eq!(m.id.as_deref(), Some("aws"));
        assert_eq!(m.target.as_deref(), Some("/run/secrets/aws"));
        assert!(!m.required);
        let m = parse("type=secret,source=tok,required").unwrap();
        assert_eq!(m.id.as_deref(), Some("tok"));
        assert_eq!(m.target.as_deref(), Some("/run/secrets/tok"));
        assert!(m.required);
        let m = parse("type=secret,target=/etc/key.pem,required=false").unwrap();
        assert_eq!(m.id.as_deref(), Some("key.pem"));
        assert_eq!(m.target.as_deref(), Some("/etc/key.pem"));
        let m = parse("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        assert_eq!(m.target, None);
        let m = parse("type=secret,id=tok,env=TOKEN,target=/t").unwrap();
        assert_eq!(m.target.as_deref(), Some("/t"));
    }

    #[test]
    fn secret_errors() {
        assert_eq!(
            parse("type=secret").unwrap_err(),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            parse("type=secret,id=a,source=b").unwrap_err(),
            "both source and id can't be set"
        );
        assert_eq!(
            parse("type=secret,id=a,from=x").unwrap_err(),
            "secret mount should not have a from"
        );
        assert_eq!(
            parse("type=secret,id=a,sharing=shared").unwrap_err(),
            "secret mount should not define sharing"
        );
    }

    #[test]
    fn ssh_defaults() {
        let m = parse("type=ssh").unwrap();
        assert_eq!(m.kind, MountKind::Ssh);
        assert_eq!(m.id.as_deref(), Some("default"));
        assert!(m.read_only);
        let m = parse("type=ssh,id=gh,target=/s,mode=0600,required").unwrap();
        assert_eq!(m.id.as_deref(), Some("gh"));
        assert!(m.required);
        assert_eq!(
            parse("type=ssh,source=x").unwrap_err(),
            "ssh does not support source"
        );
        let mut mounts = vec![
            parse("type=ssh").unwrap(),
            parse("type=ssh,target=/s").unwrap(),
            parse("type=ssh,id=b").unwrap(),
        ];
        number_ssh_sockets(&mut mounts);
        assert_eq!(
            mounts[0].target.as_deref(),
            Some("/run/buildkit/ssh_agent.0")
        );
        assert_eq!(mounts[1].target.as_deref(), Some("/s"));
        assert_eq!(
            mounts[2].target.as_deref(),
            Some("/run/buildkit/ssh_agent.2")
        );
    }

    #[test]
    fn field_errors() {
        assert_eq!(
            parse("type=bind,required").unwrap_err(),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            parse("required,type=secret,id=a").unwrap_err(),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            parse("type=cache,target").unwrap_err(),
            "invalid field 'target' must be a key=value pair"
        );
        assert_eq!(
            parse("").unwrap_err(),
            "invalid field '' must be a key=value pair"
        );
        assert_eq!(
            parse("type=bnd,target=/x").unwrap_err(),
            "unsupported mount type \"bnd\""
        );
        assert_eq!(
            parse("type=cache,tagret=/x").unwrap_err(),
            "unexpected key 'tagret' in 'tagret=/x'"
        );
        assert_eq!(
            parse("type=cache,target=/x,sharing=all").unwrap_err(),
            "unsupported sharing value \"all\""
        );
        assert_eq!(
            parse("type=bind,target=/x,sharing=shared").unwrap_err(),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            parse("target=/x,ro=maybe").unwrap_err(),
            "invalid value for ro: maybe"
        );
        assert_eq!(
            parse("target=/x,rw=2").unwrap_err(),
            "invalid value for rw: 2"
        );
        assert_eq!(
            parse("type=cache,target=/x,mode=0999").unwrap_err(),
            "invalid value 0999 for mode"
        );
        assert_eq!(
            parse("type=cache,target=/x,uid=-1").unwrap_err(),
            "invalid value -1 for uid"
        );
        assert_eq!(
            parse("type=cache,target=/x,gid=99999999999").unwrap_err(),
            "invalid value 99999999999 for gid"
        );
        assert_eq!(
            parse("target=/x,uid=1").unwrap_err(),
            "uid not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            parse("target=/x,gid=1").unwrap_err(),
            "gid not allowed for \"bind\" type mounts"
        );
        assert!(
            parse("target=\"/x")
                .unwrap_err()
                .starts_with("failed to parse csv mounts")
        );
        assert!(
            parse("target=/x\"y")
                .unwrap_err()
                .starts_with("failed to parse csv mounts")
        );
    }

    #[test]
    fn keys_are_case_insensitive() {
        let m = parse("TYPE=cache,Target=/x,ID=a").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.id.as_deref(), Some("a"));
    }

    #[test]
    fn parse_mode_defers_dollar_values() {
        let m = parse_mount("type=cache,target=$DIR,mode=$MODE,from=base", &Mode::Parse).unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.target.as_deref(), Some("$DIR"));
        assert_eq!(m.mode, None);
        assert_eq!(m.from.as_deref(), Some("base"));
        // The type itself deferred: type-bound keys wait too.
        assert!(parse_mount("type=$T,size=$S,required", &Mode::Parse).is_ok());
        // Unknown keys are wrong whatever the value.
        assert!(parse_mount("type=cache,tagret=$X", &Mode::Parse).is_err());
        // `from` never expands.
        let MountError::Invalid { message, .. } =
            parse_mount("type=bind,from=$STAGE", &Mode::Parse).unwrap_err()
        else {
            panic!("expected an invalid mount")
        };
        assert_eq!(
            message,
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert!(parse_mount("type=bind,from=a$", &Mode::Parse).is_ok());
    }

    #[test]
    fn expand_mode_expands_values() {
        let expand = |w: &str| Ok(w.replace("$DIR", "/cache"));
        let m = parse_mount("type=cache,target=$DIR", &Mode::Expand(&expand)).unwrap();
        assert_eq!(m.target.as_deref(), Some("/cache"));
        let fail = |w: &str| {
            Err(ShellError {
                message: format!("bad {w}"),
                offset: 0,
            })
        };
        let MountError::Shell { word, .. } =
            parse_mount("type=cache,target=${X", &Mode::Expand(&fail)).unwrap_err()
        else {
            panic!("expected a shell error")
        };
        assert_eq!(word, "cache");
    }

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a,b").unwrap(), ["a", "b"]);
        assert_eq!(csv_fields("a,").unwrap(), ["a", ""]);
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert_eq!(csv_fields("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert!(csv_fields("\"a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
        assert!(csv_fields("a\"b").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1KB"), Some(1024));
        assert_eq!(ram_in_bytes("1 kib"), Some(1024));
        assert_eq!(ram_in_bytes("3p"), Some(3 << 50));
        assert_eq!(ram_in_bytes("1.2.3k"), None);
        assert_eq!(ram_in_bytes("1."), None);
        assert_eq!(ram_in_bytes("k"), None);
        assert_eq!(ram_in_bytes("-1"), None);
        assert_eq!(ram_in_bytes("9999999999p"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(base_name("/etc/key.pem"), "key.pem");
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(base_name("/"), "/");
        assert_eq!(base_name(""), ".");
    }

    #[test]
    fn network_and_security() {
        assert_eq!(parse_network("host"), Ok(NetworkMode::Host));
        assert_eq!(parse_network("none"), Ok(NetworkMode::None));
        assert_eq!(parse_network("default"), Ok(NetworkMode::Default));
        assert_eq!(
            parse_network("HOST").unwrap_err().0,
            "invalid network mode \"HOST\""
        );
        assert_eq!(parse_security("insecure"), Ok(SecurityMode::Insecure));
        assert_eq!(parse_security("sandbox"), Ok(SecurityMode::Sandbox));
        assert_eq!(
            parse_security("x").unwrap_err().0,
            "security \"x\" is not valid"
        );
    }
}
