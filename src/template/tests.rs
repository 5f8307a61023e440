//! Docker's documented `--format` examples (docs "Format command and log output", `docker inspect`,
//! `docker ps`, `docker images`), each with the output docker shows for it, plus Go's edge cases.

use super::*;
use serde_json::json;

fn container() -> Value {
    json!({
        "Id": "4c01db0b339c",
        "Name": "/MyContainer",
        "Args": ["-c", "echo hi"],
        "LogPath": "/var/lib/docker/containers/4c01/4c01-json.log",
        "Image": "sha256:ab12cd",
        "State": {"Status": "running", "Running": true, "ExitCode": 0, "Health": null},
        "Config": {"Image": "ubuntu:22.04", "Env": ["PATH=/usr/bin", "A=1"], "Entrypoint": null,
                   "Volumes": null, "Labels": {"com.example.vendor": "ACME", "version": "1.0"}},
        "Mounts": [{"Type": "volume", "Name": "data", "Destination": "/data"}],
        "NetworkSettings": {
            "Networks": {"bridge": {"IPAddress": "172.17.0.2", "MacAddress": "02:42:ac:11:00:02"}},
            "Ports": {"8787/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8787"}],
                      "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
        }
    })
}

fn r(t: &str) -> String {
    render(t, &container()).unwrap_or_else(|e| panic!("{t}: {e}"))
}

#[test]
fn docker_inspect_examples() {
    assert_eq!(r("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"), "172.17.0.2");
    assert_eq!(r("{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}"), "02:42:ac:11:00:02");
    assert_eq!(r("{{.LogPath}}"), "/var/lib/docker/containers/4c01/4c01-json.log");
    assert_eq!(r("{{.Config.Image}}"), "ubuntu:22.04");
    assert_eq!(
        r("{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}"),
        " 80/tcp -> 8080  8787/tcp -> 8787 "
    );
    assert_eq!(r(r#"{{(index (index .NetworkSettings.Ports "8787/tcp") 0).HostPort}}"#), "8787");
    assert_eq!(r("{{json .Config.Labels}}"), r#"{"com.example.vendor":"ACME","version":"1.0"}"#);
}

#[test]
fn docker_formatting_functions() {
    // docs/config/formatting: join, json, lower, split, title, upper, pad, truncate, println.
    assert_eq!(r(r#"{{join .Args " , "}}"#), "-c , echo hi");
    assert_eq!(r("{{json .Mounts}}"), r#"[{"Destination":"/data","Name":"data","Type":"volume"}]"#);
    assert_eq!(r("{{lower .Name}}"), "/mycontainer");
    assert_eq!(r(r#"{{split .Image ":"}}"#), "[sha256 ab12cd]");
    assert_eq!(r("{{title .Name}}"), "/MyContainer");
    assert_eq!(render("{{title .}}", &json!("hello wide world")).unwrap(), "Hello Wide World");
    assert_eq!(r("{{upper .Name}}"), "/MYCONTAINER");
    assert_eq!(r("{{pad .State.Status 2 3}}|"), "  running   |");
    assert_eq!(r("{{truncate .Config.Image 6}}"), "ubuntu");
    assert_eq!(r("{{range .Config.Env}}{{println .}}{{end}}"), "PATH=/usr/bin\nA=1\n");
    assert_eq!(r(r#"{{index .Config.Labels "com.example.vendor"}}"#), "ACME");
    assert_eq!(r(r#"{{index .Config.Labels "nope"}}"#), "");
}

#[test]
fn go_printing_of_absent_and_nil_values() {
    assert_eq!(r("{{.Nope}}"), "<no value>");
    assert_eq!(r("{{.Nope.Deeper}}"), "<no value>");
    assert_eq!(r("{{.State.Health}}"), "<nil>");
    assert_eq!(r("{{.Config.Entrypoint}}"), "[]");
    assert_eq!(r("{{.Config.Volumes}}"), "map[]");
    assert_eq!(r("{{json .Config.Entrypoint}}"), "null");
    assert_eq!(r("{{.Config.Labels}}"), "map[com.example.vendor:ACME version:1.0]");
    assert_eq!(r("{{.Config.Env}}"), "[PATH=/usr/bin A=1]");
    assert_eq!(r("{{.State.Running}} {{.State.ExitCode}}"), "true 0");
    assert_eq!(r("{{.Mounts}}"), "[map[Destination:/data Name:data Type:volume]]");
}

#[test]
fn control_structures() {
    assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}"), "up");
    assert_eq!(r(r#"{{if eq .State.Status "exited"}}x{{else if .State.Running}}r{{else}}?{{end}}"#), "r");
    assert_eq!(r("{{with .Config}}{{.Image}}{{end}}"), "ubuntu:22.04");
    assert_eq!(r("{{with .Nope}}x{{else}}none{{end}}"), "none");
    assert_eq!(r("{{range .Nope}}x{{else}}empty{{end}}"), "empty");
    assert_eq!(r("{{range $i, $e := .Args}}{{$i}}={{$e}};{{end}}"), "0=-c;1=echo hi;");
    assert_eq!(r("{{len .Args}} {{len .Config.Labels}} {{len .Config.Entrypoint}}"), "2 2 0");
    assert_eq!(r("{{$n := .Config.Image}}{{$n}}"), "ubuntu:22.04");
    assert_eq!(r("{{range .Args}}{{if eq . \"-c\"}}{{continue}}{{end}}{{.}}{{end}}"), "echo hi");
    assert_eq!(r("{{- \"a\" -}}  \n {{- \"b\"}}"), "ab");
    assert_eq!(r("{{/* a comment */}}x"), "x");
    assert_eq!(r(r#"{{.Config.Image | printf "%q"}}"#), "\"ubuntu:22.04\"");
    assert_eq!(r(r#"{{printf "%-8s|%5d|%.2f" .State.Status 42 3.14159}}"#), "running |   42|3.14");
    assert_eq!(
        r("{{and .State.Running .Config.Image}} {{or .Nope \"dflt\"}} {{not .State.Running}}"),
        "ubuntu:22.04 dflt false"
    );
    assert_eq!(r("{{slice .Config.Image 0 6}}"), "ubuntu");
    assert_eq!(r("{{$.Config.Image}}"), "ubuntu:22.04");
}

#[test]
fn errors_read_as_docker_s() {
    let e = render("{{.Config.Image.Foo}}", &container()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template parsing error: template: :1: executing \"\": can't evaluate field Foo in type string"
    );
    assert!(
        matches!(render("{{nosuch .}}", &json!({})), Err(TemplateError::Parse(m)) if m.contains("\"nosuch\" not defined"))
    );
    assert!(render("{{if .X}}", &json!({})).is_err());
    assert!(render("{{.X", &json!({})).is_err());
}

#[test]
fn list_formats_and_tables() {
    let rows = vec![
        json!({"ID": "4c01db0b339c", "Image": "ubuntu:22.04", "Names": "web", "Labels": "a=1,b=2"}),
        json!({"ID": "d7886598dbe2", "Image": "busybox", "Names": "db", "Labels": ""}),
    ];
    let headers = json!({"ID": "CONTAINER ID", "Image": "IMAGE", "Names": "NAMES", "Labels": "LABELS"});
    let label: Method = |row, args| {
        let want = args.first().and_then(Value::as_str).unwrap_or_default();
        row["Labels"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == want).map(|(_, v)| v.to_string()))
            .unwrap_or_default()
    };
    let m = Methods::none().with("Label", label);
    // docker ps --format "table {{.ID}}\t{{.Image}}\t{{.Names}}" (docs example), `\t` typed literally.
    let f = ListFormat::new(Some(r"table {{.ID}}\t{{.Image}}\t{{.Names}}"), "").unwrap();
    assert_eq!(
        f.render(&headers, &rows, &m).unwrap(),
        "CONTAINER ID   IMAGE          NAMES\n4c01db0b339c   ubuntu:22.04   web\nd7886598dbe2   busybox        db\n"
    );
    // docker ps --format "{{.ID}}: {{.Command}}"-style: no header, one line per row.
    let f = ListFormat::new(Some("{{.ID}}: {{.Names}}"), "").unwrap();
    assert_eq!(f.render(&headers, &rows, &m).unwrap(), "4c01db0b339c: web\nd7886598dbe2: db\n");
    let f = ListFormat::new(Some(r#"table {{.ID}}\t{{.Label "a"}}"#), "").unwrap();
    assert_eq!(
        f.render(&headers, &rows, &m).unwrap(),
        "CONTAINER ID   A\n4c01db0b339c   1\nd7886598dbe2   \n"
    );
    let f = ListFormat::new(Some("json"), "").unwrap();
    assert!(f.render(&headers, &rows[1..], &m).unwrap().starts_with(r#"{"ID":"d7886598dbe2","#));
    // The header keeps `upper`'s argument as it is: the column is headed by the field's title.
    let f = ListFormat::new(Some("table {{upper .Names}}"), "").unwrap();
    assert_eq!(f.render(&headers, &rows, &m).unwrap(), "NAMES\nWEB\nDB\n");
    // A typed row (docker's list contexts) has no `<no value>`: an unknown field is an error.
    let typed = Methods::none().typed("*formatter.ContainerContext");
    let f = ListFormat::new(Some("{{.Nope}}"), "").unwrap();
    let e = f.render(&headers, &rows, &typed).unwrap_err();
    assert!(e.to_string().ends_with("can't evaluate field Nope in type *formatter.ContainerContext"), "{e}");
    assert_eq!(
        ListFormat::new(Some("{{.Names}}"), "").unwrap().render(&headers, &rows[..1], &typed).unwrap(),
        "web\n"
    );
    // Nothing or `table` alone: the command's default table.
    let f = ListFormat::new(None, r"{{.Names}}\t{{.Image}}").unwrap();
    assert!(f.is_table());
    assert_eq!(f.render(&headers, &[], &m).unwrap(), "NAMES     IMAGE\n");
}
