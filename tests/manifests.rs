//! The deployment files, alerts and runbooks against what the code ships: every YAML document
//! under `deployments/` parses; the names operators rely on are there; RBAC grants exactly what
//! `src/adapters/kube` calls; every alert links an existing runbook; every metric and label an
//! alert or a runbook uses is one `src/` exports; every environment variable the manifests and
//! docs name is one `rdev-api --help` lists.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize as _;
use serde_yaml_ng::Value;

// ---------------------------------------------------------------------------------------------
// Loading

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every YAML document of a file (`---`-separated), empty ones left out.
fn documents_of(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|document| !document.is_null())
        .collect()
}

/// Every YAML document under `deployments/`, with the file it came from.
fn deployment_documents() -> Vec<(PathBuf, Value)> {
    files_under(&repo().join("deployments"), &["yaml", "yml"])
        .into_iter()
        .flat_map(|path| documents_of(&path).into_iter().map(move |doc| (path.clone(), doc)))
        .collect()
}

/// The Kubernetes objects (documents with `apiVersion` and `kind`) under `deployments/k8s`.
fn k8s_objects() -> Vec<Value> {
    deployment_documents()
        .into_iter()
        .filter(|(path, doc)| {
            path.starts_with(repo().join("deployments/k8s"))
                && doc.get("apiVersion").is_some()
                && doc.get("kind").is_some_and(|kind| kind.as_str() != Some("Kustomization"))
        })
        .map(|(_, doc)| doc)
        .collect()
}

fn objects_of_kind(kind: &str) -> Vec<Value> {
    k8s_objects().into_iter().filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind)).collect()
}

fn object(kind: &str, name: &str) -> Value {
    let matching: Vec<Value> =
        objects_of_kind(kind).into_iter().filter(|o| str_at(o, "metadata.name") == name).collect();
    assert_eq!(matching.len(), 1, "expected exactly one {kind} named {name}, found {}", matching.len());
    matching.into_iter().next().expect("one object")
}

/// The value at a dotted path (`spec.template.spec`); numeric segments index sequences.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |value, key| {
        let next = match key.parse::<usize>() {
            Ok(index) => value.get(index),
            Err(_) => value.get(key),
        };
        next.unwrap_or_else(|| panic!("no `{key}` on the way to `{path}` in {value:?}"))
    })
}

fn str_at<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path).as_str().unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn seq_at<'a>(value: &'a Value, path: &str) -> &'a [Value] {
    at(value, path).as_sequence().map(Vec::as_slice).unwrap_or_else(|| panic!("`{path}` is not a list"))
}

fn strings(values: &[Value]) -> BTreeSet<String> {
    values.iter().map(|v| v.as_str().expect("a string").to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// What the code ships: metric names and labels, environment variables

/// `pub const NAME: &str = "metric";` lines of src/telemetry/metrics.rs: const → metric name.
fn metric_consts() -> BTreeMap<String, String> {
    read("src/telemetry/metrics.rs")
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, rest) = rest.split_once(": &str = \"")?;
            let value = rest.strip_suffix("\";")?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Each exported metric with the labels `src/` records it with, found in the `counter!`,
/// `gauge!` and `histogram!` calls (`"label" => value`).
fn exported_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let consts = metric_consts();
    let mut metrics: BTreeMap<String, BTreeSet<String>> =
        consts.values().map(|name| (name.clone(), BTreeSet::new())).collect();
    for path in files_under(&repo().join("src"), &["rs"]) {
        let source = fs::read_to_string(&path).expect("source file");
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            let mut rest = source.as_str();
            while let Some(start) = rest.find(macro_name) {
                let preceding = rest[..start].chars().last();
                rest = &rest[start + macro_name.len()..];
                if preceding.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // describe_counter!( and the like
                }
                let arguments = balanced(rest);
                let first = arguments.split(',').next().unwrap_or_default().trim();
                let constant = first.rsplit("::").next().unwrap_or_default();
                let Some(metric) = consts.get(constant) else {
                    panic!("{}: {macro_name} with {first:?}, not a const of metrics.rs", path.display())
                };
                let labels = metrics.get_mut(metric).expect("metric listed");
                labels.extend(quoted_before_arrow(arguments));
            }
        }
    }
    metrics
}

/// The text up to the parenthesis that closes an already opened one.
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

/// `"label" =>` occurrences.
fn quoted_before_arrow(text: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some(arrow) = rest.find("=>") {
        let before = rest[..arrow].trim_end();
        if let Some(stripped) = before.strip_suffix('"')
            && let Some(open) = stripped.rfind('"')
        {
            labels.push(stripped[open + 1..].to_owned());
        }
        rest = &rest[arrow + 2..];
    }
    labels
}

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];
/// Series Prometheus itself makes for every target.
const SYNTHETIC_METRICS: &[&str] = &["up"];
/// Read by the process but not a clap setting (so not in `--help`): the log filter of
/// tracing-subscriber's `EnvFilter`.
const ENV_OUTSIDE_HELP: &[&str] = &["RUST_LOG"];

/// The labels a series name may carry: an exported metric's (a histogram's `_bucket` adds `le`),
/// or None if it is not exported.
fn labels_of(series: &str, exported: &BTreeMap<String, BTreeSet<String>>) -> Option<BTreeSet<String>> {
    let target = TARGET_LABELS.iter().map(|l| (*l).to_owned());
    if SYNTHETIC_METRICS.contains(&series) {
        return Some(target.collect());
    }
    if let Some(labels) = exported.get(series) {
        return Some(labels.iter().cloned().chain(target).collect());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix)
            && base.ends_with("_seconds")
            && let Some(labels) = exported.get(base)
        {
            let le = (suffix == "_bucket").then(|| "le".to_owned());
            return Some(labels.iter().cloned().chain(target).chain(le).collect());
        }
    }
    None
}

/// `(env var, default)` for every setting `rdev-api --help` lists.
fn help_env() -> BTreeMap<String, Option<String>> {
    let output = Command::new(env!("CARGO_BIN_EXE_rdev-api"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("running rdev-api --help");
    assert!(output.status.success(), "rdev-api --help failed");
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    let mut settings = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in help.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("[env: ") {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            settings.insert(name.clone(), None);
            last = Some(name);
        } else if let Some(rest) = line.strip_prefix("[default: ") {
            if let Some(name) = &last {
                settings.insert(name.clone(), Some(rest.trim_end_matches(']').to_owned()));
            }
        } else if line.starts_with("--") || line.starts_with("-h") {
            last = None;
        }
    }
    assert!(settings.len() > 20, "--help lists only {} settings: {settings:?}", settings.len());
    settings
}

// ---------------------------------------------------------------------------------------------
// A small PromQL reader: enough to find the series and labels an expression names

#[derive(Default, Debug)]
struct PromqlNames {
    /// Each selector: the series name and the labels its matchers use.
    selectors: Vec<(String, Vec<String>)>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    grouping: Vec<String>,
}

const GROUPING_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
/// Binary operators, modifiers, and aggregations (which may come before their `by (…)`).
const OPERATOR_KEYWORDS: &str =
    "and or unless bool offset sum min max avg count group stddev stdvar topk bottomk quantile count_values";

fn promql_names(expr: &str) -> PromqlNames {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = PromqlNames::default();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let read_ident = |mut i: usize| {
        let start = i;
        while i < chars.len() && ident_char(chars[i]) {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    // `{a="x", b=~"y"}` from just after `{`: the label names, and where it ends.
    let read_matchers = |mut i: usize| {
        let mut labels = Vec::new();
        loop {
            i = skip_space(i);
            if i >= chars.len() || chars[i] == '}' {
                return (labels, i + 1);
            }
            if chars[i] == ',' {
                i += 1;
                continue;
            }
            let (label, next) = read_ident(i);
            assert!(!label.is_empty(), "cannot read the matchers of {expr:?}");
            labels.push(label);
            i = next;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            let (labels, next) = read_matchers(i + 1);
            names.selectors.push((String::new(), labels));
            i = next;
        } else if ident_start(c) && (i == 0 || !ident_char(chars[i - 1])) {
            let (word, next) = read_ident(i);
            let after = skip_space(next);
            if GROUPING_KEYWORDS.contains(&word.as_str()) {
                if chars.get(after) == Some(&'(') {
                    let close = (after..chars.len()).find(|&j| chars[j] == ')').expect("closing parenthesis");
                    let inner: String = chars[after + 1..close].iter().collect();
                    names.grouping.extend(inner.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
                    i = close + 1;
                } else {
                    i = next;
                }
            } else if OPERATOR_KEYWORDS.split_whitespace().any(|k| k == word) || chars.get(after) == Some(&'(') {
                i = next; // an operator, or a function/aggregation call
            } else if chars.get(after) == Some(&'{') {
                let (labels, end) = read_matchers(after + 1);
                names.selectors.push((word, labels));
                i = end;
            } else {
                names.selectors.push((word, Vec::new()));
                i = next;
            }
        } else {
            i += 1;
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Alerts

fn plain_rules() -> Value {
    let docs = documents_of(&repo().join("deployments/prometheus/rdev-api.rules.yaml"));
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().expect("one document")
}

/// (alert name, expr, runbook_url) of every alert.
fn alerts() -> Vec<(String, String, String)> {
    let rules = plain_rules();
    let mut out = Vec::new();
    for group in seq_at(&rules, "groups") {
        for rule in seq_at(group, "rules") {
            let Some(alert) = rule.get("alert").and_then(Value::as_str) else { continue };
            let runbook =
                rule.get("annotations").and_then(|a| a.get("runbook_url")).and_then(Value::as_str).unwrap_or_default();
            out.push((alert.to_owned(), str_at(rule, "expr").to_owned(), runbook.to_owned()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The names operators rely on

#[test]
fn every_yaml_file_under_deployments_parses() {
    let documents = deployment_documents();
    assert!(documents.len() >= 12, "only {} YAML documents under deployments/", documents.len());
    for (path, doc) in &documents {
        assert!(doc.is_mapping(), "{}: a document that is not a mapping", path.display());
    }
}

#[test]
fn namespace_and_service_account() {
    let namespace = object("Namespace", "rdev");
    assert!(namespace.get("metadata").and_then(|m| m.get("namespace")).is_none());
    let account = object("ServiceAccount", "rdev-api");
    assert_eq!(str_at(&account, "metadata.namespace"), "rdev");
    for object in k8s_objects() {
        let kind = str_at(&object, "kind");
        if kind != "Namespace" {
            assert_eq!(str_at(&object, "metadata.namespace"), "rdev", "{kind} outside namespace rdev");
        }
    }
}

#[test]
fn role_binding_binds_the_service_account_to_the_role() {
    let binding = object("RoleBinding", "rdev-api-binding");
    assert_eq!(str_at(&binding, "metadata.namespace"), "rdev");
    assert_eq!(str_at(&binding, "roleRef.kind"), "Role");
    assert_eq!(str_at(&binding, "roleRef.apiGroup"), "rbac.authorization.k8s.io");
    let role = object("Role", str_at(&binding, "roleRef.name"));
    assert_eq!(str_at(&role, "metadata.namespace"), "rdev");
    let subjects = seq_at(&binding, "subjects");
    assert_eq!(subjects.len(), 1, "the binding is for rdev-api alone");
    assert_eq!(str_at(&subjects[0], "kind"), "ServiceAccount");
    assert_eq!(str_at(&subjects[0], "name"), "rdev-api");
    assert_eq!(str_at(&subjects[0], "namespace"), "rdev");
    assert_eq!(objects_of_kind("RoleBinding").len(), 1);
}

/// `src/adapters/kube` lists pods by label selector and opens pod exec as a WebSocket (an HTTP
/// GET): RBAC checks `get` on pods/exec for that, and Kubernetes 1.35+ also `create`
/// (AuthorizePodWebsocketUpgradeCreatePermission). Nothing else, nowhere else.
#[test]
fn role_grants_exactly_pod_reads_and_exec() {
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(objects_of_kind(kind).is_empty(), "rdev-api needs no {kind}");
    }
    let roles = objects_of_kind("Role");
    assert_eq!(roles.len(), 1, "one Role");
    let mut granted = BTreeSet::new();
    for rule in seq_at(&roles[0], "rules") {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for group in strings(seq_at(rule, "apiGroups")) {
            for resource in strings(seq_at(rule, "resources")) {
                for verb in strings(seq_at(rule, "verbs")) {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> =
        [("pods", "get"), ("pods", "list"), ("pods", "watch"), ("pods/exec", "create"), ("pods/exec", "get")]
            .into_iter()
            .map(|(resource, verb)| (String::new(), resource.to_owned(), verb.to_owned()))
            .collect();
    assert_eq!(granted, expected);
}

#[test]
fn deployment_runs_two_hardened_replicas_with_the_names_operators_use() {
    let deployment = object("Deployment", "rdev-api");
    assert_eq!(str_at(&deployment, "metadata.namespace"), "rdev");
    assert_eq!(str_at(&deployment, "metadata.labels.app"), "rdev-api");
    assert_eq!(str_at(&deployment, "spec.selector.matchLabels.app"), "rdev-api");
    assert_eq!(str_at(&deployment, "spec.template.metadata.labels.app"), "rdev-api");
    assert!(at(&deployment, "spec.replicas").as_u64().expect("replicas") >= 2);
    let pod = at(&deployment, "spec.template.spec");
    assert_eq!(str_at(pod, "serviceAccountName"), "rdev-api");
    assert_eq!(at(pod, "terminationGracePeriodSeconds").as_u64(), Some(30));
    assert_eq!(at(pod, "securityContext.runAsNonRoot").as_bool(), Some(true));
    assert_eq!(str_at(pod, "securityContext.seccompProfile.type"), "RuntimeDefault");

    let containers = seq_at(pod, "containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let ports = seq_at(container, "ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(at(&ports[0], "containerPort").as_u64(), Some(8080));
    assert_eq!(str_at(&ports[0], "name"), "http");
    assert_eq!(str_at(container, "livenessProbe.httpGet.path"), "/health");
    assert_eq!(str_at(container, "readinessProbe.httpGet.path"), "/ready");

    let security = at(container, "securityContext");
    assert_eq!(at(security, "runAsNonRoot").as_bool(), Some(true));
    assert_eq!(at(security, "readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(at(security, "allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(strings(seq_at(security, "capabilities.drop")), BTreeSet::from(["ALL".to_owned()]));
    assert_eq!(str_at(security, "seccompProfile.type"), "RuntimeDefault");

    // The read-only root leaves /tmp, an emptyDir, as the only writable place.
    let tmp = seq_at(container, "volumeMounts").iter().find(|m| str_at(m, "mountPath") == "/tmp").expect("/tmp");
    let volume = seq_at(pod, "volumes").iter().find(|v| str_at(v, "name") == str_at(tmp, "name")).expect("volume");
    assert!(volume.get("emptyDir").is_some());

    let env: BTreeMap<&str, &Value> = seq_at(container, "env").iter().map(|e| (str_at(e, "name"), e)).collect();
    assert!(env.contains_key("RDEV_NAMESPACE"));
    // A literal value, so `kubectl -n rdev set env deployment/rdev-api CACHE_TTL=5s` replaces it.
    assert_eq!(str_at(env["CACHE_TTL"], "value"), "30s");
    for secret in ["DATABASE_URL", "RDEV_BOOTSTRAP_API_KEY"] {
        let reference = at(env[secret], "valueFrom.secretKeyRef");
        assert_eq!(str_at(reference, "name"), "rdev-api-secrets", "{secret} comes from the Secret");
    }
    // The ConfigMap sets neither, so the Deployment's values are the only ones.
    let config = object("ConfigMap", str_at(container, "envFrom.0.configMapRef.name"));
    let data = at(&config, "data").as_mapping().expect("data");
    for name in ["RDEV_NAMESPACE", "CACHE_TTL", "DATABASE_URL", "RDEV_BOOTSTRAP_API_KEY"] {
        assert!(!data.contains_key(name), "{name} belongs on the Deployment, not in the ConfigMap");
    }
    assert_eq!(str_at(&config, "data.RDEV_EXECUTOR"), "kubernetes");
    // Requests get RDEV_SHUTDOWN_GRACE to finish, inside Kubernetes' 30 s.
    assert_eq!(str_at(&config, "data.RDEV_SHUTDOWN_GRACE"), "25s");
}

#[test]
fn service_exposes_port_8080() {
    let service = object("Service", "rdev-api");
    assert_eq!(str_at(&service, "spec.selector.app"), "rdev-api");
    let ports = seq_at(&service, "spec.ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(at(&ports[0], "port").as_u64(), Some(8080));
    assert_eq!(str_at(&ports[0], "targetPort"), "http");
}

#[test]
fn no_secret_is_committed() {
    for (path, doc) in deployment_documents() {
        let kind = doc.get("kind").and_then(Value::as_str);
        assert_ne!(kind, Some("Secret"), "{}: Secrets are created by operators, never committed", path.display());
    }
}

#[test]
fn disruption_budget_and_network_policy_select_the_pods() {
    let budget = object("PodDisruptionBudget", "rdev-api");
    assert_eq!(at(&budget, "spec.minAvailable").as_u64(), Some(1));
    assert_eq!(str_at(&budget, "spec.selector.matchLabels.app"), "rdev-api");

    let policy = object("NetworkPolicy", "rdev-api");
    assert_eq!(str_at(&policy, "spec.podSelector.matchLabels.app"), "rdev-api");
    assert_eq!(strings(seq_at(&policy, "spec.policyTypes")), BTreeSet::from(["Egress".into(), "Ingress".into()]));
    let ingress_ports: Vec<u64> = seq_at(&policy, "spec.ingress")
        .iter()
        .flat_map(|rule| seq_at(rule, "ports").iter().map(|p| at(p, "port").as_u64().expect("numeric port")))
        .collect();
    assert_eq!(ingress_ports, vec![8080], "ingress to 8080 only");
    let egress_ports: BTreeSet<u64> = seq_at(&policy, "spec.egress")
        .iter()
        .flat_map(|rule| seq_at(rule, "ports").iter().map(|p| at(p, "port").as_u64().expect("numeric port")))
        .collect();
    assert_eq!(egress_ports, BTreeSet::from([53, 443, 4318, 5432, 6443]));
}

#[test]
fn kustomization_lists_every_manifest_of_base() {
    let base = repo().join("deployments/k8s/base");
    let kustomization = documents_of(&base.join("kustomization.yaml")).remove(0);
    let listed = strings(seq_at(&kustomization, "resources"));
    let present: BTreeSet<String> = files_under(&base, &["yaml"])
        .iter()
        .map(|p| p.file_name().and_then(|n| n.to_str()).expect("name").to_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
    assert!(present.contains("rdev-api.yaml"));
}

// ---------------------------------------------------------------------------------------------
// Alerts and runbooks

#[test]
fn prometheus_rule_holds_the_plain_rules_file() {
    let rule = object("PrometheusRule", "rdev-api");
    assert_eq!(at(&rule, "spec.groups"), at(&plain_rules(), "groups"), "the two rule files differ");
}

#[test]
fn every_alert_links_a_runbook_that_exists() {
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts.iter().map(|(name, _, _)| name.as_str()).collect();
    for expected in ["RdevAPIProjectNotFound", "RdevAPICircuitOpen", "RdevAPIHighErrorRate", "RdevAPIQueueBacklog"] {
        assert!(names.contains(expected), "no alert {expected}");
    }
    for (alert, _, runbook) in &alerts {
        assert_eq!(runbook, &format!("docs/runbooks/{alert}.md"), "{alert}'s runbook_url");
        let text = read(runbook);
        assert!(text.contains(alert.as_str()), "{runbook} does not name {alert}");
    }
    // And no runbook without its alert.
    for path in files_under(&repo().join("docs/runbooks"), &["md"]) {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
        assert!(stem == "README" || names.contains(stem), "{} has no alert", path.display());
    }
}

#[test]
fn alerts_use_only_exported_metrics_and_labels() {
    let exported = exported_metrics();
    for (alert, expr, _) in alerts() {
        let names = promql_names(&expr);
        assert!(!names.selectors.is_empty(), "{alert}: no series in {expr:?}");
        let mut all_labels = BTreeSet::new();
        for (series, labels) in &names.selectors {
            assert!(!series.is_empty(), "{alert}: a selector without a metric name");
            let known = labels_of(series, &exported)
                .unwrap_or_else(|| panic!("{alert}: {series} is not a metric rdev-api exports"));
            for label in labels {
                assert!(known.contains(label), "{alert}: {series} has no label {label} (it has {known:?})");
            }
            all_labels.extend(known);
        }
        for label in &names.grouping {
            assert!(all_labels.contains(label), "{alert}: groups by {label}, which its series lack");
        }
    }
}

#[test]
fn promql_reader_finds_series_and_labels() {
    let names = promql_names(
        r#"sum by (route) (rate(http_requests_total{route=~"/projects/.+", status="404"}[5m])) > 0.1 and on(instance) up"#,
    );
    assert_eq!(
        names.selectors,
        vec![("http_requests_total".into(), vec!["route".into(), "status".into()]), ("up".into(), vec![])]
    );
    assert_eq!(names.grouping, vec!["route".to_owned(), "instance".to_owned()]);
}

/// Markdown under docs/runbooks plus docs/operations.md.
fn operator_docs() -> Vec<(PathBuf, String)> {
    let mut paths = files_under(&repo().join("docs/runbooks"), &["md"]);
    paths.push(repo().join("docs/operations.md"));
    paths.into_iter().map(|p| (p.clone(), fs::read_to_string(&p).expect("doc"))).collect()
}

/// Words that look like Prometheus series names.
fn series_like_words(text: &str) -> BTreeSet<String> {
    const ENDINGS: &[&str] =
        &["_total", "_seconds", "_seconds_bucket", "_seconds_sum", "_seconds_count", "_depth", "_state", "_info"];
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.contains('_') && ENDINGS.iter().any(|e| w.ends_with(e)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn runbooks_name_only_exported_metrics_and_labels() {
    let exported = exported_metrics();
    for (path, text) in operator_docs() {
        for word in series_like_words(&text) {
            assert!(labels_of(&word, &exported).is_some(), "{}: {word} is not an exported metric", path.display());
        }
        // `grep 'metric.*label="value"'` on /metrics: the metric and each label must exist.
        for line in text.lines().filter(|l| l.contains("/metrics") && l.contains("grep")) {
            let pattern = line.split("grep").nth(1).expect("after grep").trim();
            let pattern = pattern.trim_start_matches(['\'', '"']);
            let series: String = pattern.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let known = labels_of(&series, &exported)
                .unwrap_or_else(|| panic!("{}: greps for {series:?}, not an exported metric", path.display()));
            for piece in pattern.split("=\"").collect::<Vec<_>>().iter().rev().skip(1) {
                let label: String =
                    piece.chars().rev().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let label: String = label.chars().rev().collect();
                assert!(known.contains(&label), "{}: {series} has no label {label}", path.display());
            }
        }
    }
}

/// The commands operators already run, verbatim.
#[test]
fn runbooks_carry_the_commands_operators_know() {
    let runbooks: String = files_under(&repo().join("docs/runbooks"), &["md"])
        .iter()
        .map(|p| fs::read_to_string(p).expect("runbook"))
        .collect();
    for command in [
        r#"kubectl -n rdev logs -l app=rdev-api --since=10m | grep "project not found""#,
        r#"curl -s http://rdev-api:8080/metrics | grep 'http_requests_total.*status="404"'"#,
        "kubectl auth can-i list pods -n rdev --as=system:serviceaccount:rdev:rdev-api",
        "kubectl -n rdev set env deployment/rdev-api CACHE_TTL=5s",
        "kubectl -n rdev get pods -l rdev.orchard9.ai/project=true -L rdev.orchard9.ai/project-id",
    ] {
        assert!(runbooks.contains(command), "no runbook has `{command}`");
    }
    // The labels those commands use are the code's.
    let kube = read("src/adapters/kube/mod.rs");
    assert!(kube.contains(r#"PROJECT_LABEL: &str = "rdev.orchard9.ai/project";"#));
    assert!(kube.contains(r#"PROJECT_ID_LABEL: &str = "rdev.orchard9.ai/project-id";"#));
    assert!(read("src/services/projects.rs").contains(r#""project not found""#));
}

// ---------------------------------------------------------------------------------------------
// Environment variables

/// Env var names a text mentions: words starting with one of rdev-api's setting prefixes.
fn env_like_words(text: &str) -> BTreeSet<String> {
    const PREFIXES: &[&str] = &["RDEV_", "OTEL_", "CACHE_", "DATABASE_", "RUST_", "KUBE"];
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| PREFIXES.iter().any(|p| w.starts_with(p)) && !w.ends_with('_'))
        .filter(|w| w.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_env_var_in_manifests_and_docs_is_a_setting_of_the_binary() {
    let help = help_env();
    let known = |name: &str| help.contains_key(name) || ENV_OUTSIDE_HELP.contains(&name);

    // The Deployment's env and the ConfigMap it loads.
    let deployment = object("Deployment", "rdev-api");
    let container = at(&deployment, "spec.template.spec.containers.0");
    let mut names: Vec<String> = seq_at(container, "env").iter().map(|e| str_at(e, "name").to_owned()).collect();
    for source in seq_at(container, "envFrom") {
        let config = object("ConfigMap", str_at(source, "configMapRef.name"));
        let data = at(&config, "data").as_mapping().expect("data");
        names.extend(data.keys().map(|k| k.as_str().expect("key").to_owned()));
    }
    // The compose file's rdev-api service, and the Dockerfile's ENV.
    let compose = documents_of(&repo().join("docker-compose.yml")).remove(0);
    let environment = at(&compose, "services.rdev-api.environment").as_mapping().expect("environment map");
    names.extend(environment.keys().map(|k| k.as_str().expect("key").to_owned()));
    names.extend(env_like_words(&read("Dockerfile")));
    for name in &names {
        assert!(known(name), "{name} is set for rdev-api but `rdev-api --help` does not list it");
    }

    // Every variable the docs name.
    let mut docs = operator_docs();
    for doc in ["docs/api.md", "docs/architecture.md"] {
        docs.push((repo().join(doc), read(doc)));
    }
    for (path, text) in docs {
        for name in env_like_words(&text) {
            assert!(known(&name), "{} names {name}, which `rdev-api --help` does not list", path.display());
        }
    }
}

/// docs/operations.md's table: one row per setting of `--help`, with its default.
#[test]
fn operations_table_matches_help() {
    let help = help_env();
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    for line in read("docs/operations.md").lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`');
        if help.contains_key(name) || ENV_OUTSIDE_HELP.contains(&name) {
            rows.insert(name.to_owned(), cells[3].trim_matches('`').to_owned());
        }
    }
    for (name, default) in &help {
        let documented = rows.get(name).unwrap_or_else(|| panic!("docs/operations.md has no row for {name}"));
        match default {
            Some(default) => assert_eq!(documented, default, "docs/operations.md: default of {name}"),
            // Unset options, and boolean flags (off unless given).
            None => assert!(["(unset)", "false"].contains(&documented.as_str()), "{name}: {documented}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Image and compose

/// Cargo needs every workspace member's manifest, so the Dockerfile copies them all, and
/// .dockerignore lets them through.
#[test]
fn image_build_copies_every_workspace_member_manifest() {
    let manifest = read("Cargo.toml");
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("workspace members");
    let dockerfile = read("Dockerfile");
    let ignore = read(".dockerignore");
    for member in members.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty() && *m != ".") {
        let path = format!("{member}/Cargo.toml");
        assert!(dockerfile.contains(&format!("COPY {path} {path}")), "the Dockerfile does not copy {path}");
        assert!(ignore.contains(&format!("!{path}")), ".dockerignore does not let {path} through");
    }
    for needed in ["--locked -p rdev-api", "EXPOSE 8080", "ENV RDEV_LISTEN=0.0.0.0:8080", "USER 10001"] {
        assert!(dockerfile.contains(needed), "the Dockerfile lacks {needed:?}");
    }
}

#[test]
fn compose_runs_the_api_on_postgres() {
    let compose = documents_of(&repo().join("docker-compose.yml")).remove(0);
    let api = at(&compose, "services.rdev-api");
    assert!(str_at(api, "environment.DATABASE_URL").starts_with("postgres://rdev:"));
    assert!(str_at(api, "environment.DATABASE_URL").contains("@postgres:5432/"));
    assert!(str_at(api, "environment.RDEV_BOOTSTRAP_API_KEY").starts_with("${RDEV_BOOTSTRAP_API_KEY"));
    assert_eq!(strings(seq_at(api, "ports")), BTreeSet::from(["8080:8080".to_owned()]));
    assert!(str_at(&compose, "services.postgres.image").starts_with("postgres:15"));
    for volume in seq_at(api, "volumes") {
        let name = volume.as_str().expect("short syntax").split(':').next().expect("name");
        assert!(at(&compose, "volumes").get(name).is_some(), "{name} is not a named volume");
    }
}

/// Relative links between the docs point at files that exist (links out of the repository, like
/// the shared contract, are left alone).
#[test]
fn doc_links_resolve() {
    let mut docs = files_under(&repo().join("docs/runbooks"), &["md"]);
    docs.extend(["docs/api.md", "docs/architecture.md", "docs/operations.md"].map(|d| repo().join(d)));
    for doc in docs {
        let text = fs::read_to_string(&doc).expect("doc");
        for piece in text.split("](").skip(1) {
            let target = piece.split(')').next().unwrap_or_default();
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || path.contains("://") {
                continue;
            }
            let resolved = doc.parent().expect("folder").join(path);
            let inside = resolved.components().filter(|c| matches!(c, std::path::Component::ParentDir)).count()
                < doc.strip_prefix(repo()).expect("in repo").components().count();
            if inside {
                assert!(resolved.exists(), "{}: broken link {target}", doc.display());
            }
        }
    }
}
