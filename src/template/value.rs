//! Values as a template sees them, and how Go's fmt prints them (`%v`): JSON data plus the two things
//! JSON cannot say — a key that is absent (`<no value>`) and what Go type a `null` had in docker's
//! structs (a nil slice prints `[]`, a nil map `map[]`, a nil pointer or interface `<nil>`).

use serde_json::Value;

/// What Go type a JSON `null` stood for, decided by the name of the field that held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NullKind {
    Nil,
    Slice,
    Map,
}

/// A value during execution.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum V {
    /// A key the data does not have: Go's invalid `reflect.Value`, printed `<no value>`.
    Missing,
    /// A `null`, typed by the field it came from.
    Null(NullKind),
    /// Any other JSON value (never `Value::Null`).
    J(Value),
}

/// Fields that are slices in docker's API types (`Config.Cmd`, `RepoTags`, ...): a `null` in one of them
/// prints `[]`, as docker's typed `inspect` does.
const SLICE_FIELDS: &[&str] = &[
    "Entrypoint",
    "Cmd",
    "Env",
    "Shell",
    "OnBuild",
    "RepoTags",
    "RepoDigests",
    "Layers",
    "Mounts",
    "Args",
    "Binds",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "CapAdd",
    "CapDrop",
    "Devices",
    "SecurityOpt",
    "Links",
    "GroupAdd",
    "Ulimits",
    "Aliases",
    "DeviceCgroupRules",
    "DeviceRequests",
    "MaskedPaths",
    "ReadonlyPaths",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "Test",
    "Warnings",
];

/// Fields that are maps in docker's API types: a `null` in one of them prints `map[]`.
const MAP_FIELDS: &[&str] = &[
    "Volumes",
    "ExposedPorts",
    "Labels",
    "Ports",
    "Networks",
    "Options",
    "Tmpfs",
    "StorageOpt",
    "Sysctls",
    "PortBindings",
    "DriverOpts",
    "Annotations",
    "Status",
    "Config",
];

impl V {
    /// The value of a JSON node reached through the field `name`.
    pub(super) fn of_field(v: Option<&Value>, name: &str) -> V {
        match v {
            None => V::Missing,
            Some(Value::Null) => V::Null(null_kind(name)),
            Some(x) => V::J(x.clone()),
        }
    }

    /// A JSON value as a template value (`null` untyped).
    pub(super) fn from_json(v: Value) -> V {
        match v {
            Value::Null => V::Null(NullKind::Nil),
            x => V::J(x),
        }
    }

    /// Go's truth: false, 0, "", and empty or nil slices and maps are false.
    pub(super) fn truthy(&self) -> bool {
        match self {
            V::Missing | V::Null(_) => false,
            V::J(Value::Bool(b)) => *b,
            V::J(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
            V::J(Value::String(s)) => !s.is_empty(),
            V::J(Value::Array(a)) => !a.is_empty(),
            V::J(Value::Object(o)) => !o.is_empty(),
            V::J(Value::Null) => false,
        }
    }

    /// The value as JSON (`null` for absent and nil values), for `json` and for comparisons.
    pub(super) fn to_json(&self) -> Value {
        match self {
            V::J(v) => v.clone(),
            _ => Value::Null,
        }
    }

    /// The Go type name docker's errors mention.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            V::Missing => "<no value>",
            V::Null(_) => "interface {}",
            V::J(v) => json_type_name(v),
        }
    }
}

pub(super) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "interface {}",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn null_kind(field: &str) -> NullKind {
    if SLICE_FIELDS.contains(&field) {
        NullKind::Slice
    } else if MAP_FIELDS.contains(&field) {
        NullKind::Map
    } else {
        NullKind::Nil
    }
}

/// `fmt.Sprint(v)` for a template value.
pub(super) fn print(v: &V) -> String {
    match v {
        V::Missing => "<no value>".into(),
        V::Null(NullKind::Nil) => "<nil>".into(),
        V::Null(NullKind::Slice) => "[]".into(),
        V::Null(NullKind::Map) => "map[]".into(),
        V::J(j) => print_json(j),
    }
}

/// `%v` of a JSON value as Go prints the `interface{}` it decodes to: `[a b]`, `map[k:v]` (keys sorted),
/// `<nil>`, integers without a fraction, floats as Go's shortest `%g`.
pub(super) fn print_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&go_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_json(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_json(out, x);
            }
            out.push(']');
        }
    }
}

/// Go's `%v` of a float64 (strconv's shortest `%g`): the shortest digits that read back the same, in
/// exponent form (`1e+06`) when the exponent is below -4 or at least 6 — why a JSON-decoded size prints
/// as `1.23456789e+08` in docker's raw-JSON fallback.
pub(super) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_prints_values() {
        assert_eq!(print_json(&json!(["a", 1, true, null])), "[a 1 true <nil>]");
        assert_eq!(print_json(&json!({"b": "x", "a": {"c": 2}})), "map[a:map[c:2] b:x]");
        assert_eq!(print_json(&json!(1.5)), "1.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(1234.5), "1234.5");
        assert_eq!(print(&V::Null(NullKind::Slice)), "[]");
        assert_eq!(print(&V::Missing), "<no value>");
    }
}
