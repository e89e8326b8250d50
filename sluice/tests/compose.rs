//! The container files checked offline (there is no container engine on the test machines):
//! `docker-compose config` must accept docker-compose.yml, and every port, environment variable,
//! config path and service name the compose file, its config files and the Dockerfile use must
//! agree with each other and with what the code reads. A typo in any of them would otherwise only
//! show when somebody runs `docker compose up`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

/// The repository root, made the working directory: the image's working directory holds
/// config/ and transforms/ as the repository does, and the configs name their scripts relative
/// to it (both tests set the same directory, so running them in parallel is harmless).
fn repo() -> PathBuf {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).parent().unwrap().to_path_buf();
    std::env::set_current_dir(&root).unwrap();
    root
}

/// docker-compose's own reading of the file (anchors merged, `${VAR:-default}` filled in), so the
/// checks below see what an engine would run. Fails, never skips, without docker-compose:
/// `scripts/test.sh` installs it.
fn compose_config() -> Value {
    let bin = std::env::var("SLUICE_TEST_DOCKER_COMPOSE").unwrap_or_else(|_| "docker-compose".into());
    let out = Command::new(&bin)
        .current_dir(repo())
        .args(["-f", "docker-compose.yml", "config"])
        // The defaults in the file are what is checked, not this machine's environment.
        .env_remove("SLUICE_WRITE_KEY")
        .env_remove("MINIO_ROOT_USER")
        .env_remove("MINIO_ROOT_PASSWORD")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} (apt-get install docker-compose, or set SLUICE_TEST_DOCKER_COMPOSE): {e}"));
    assert!(out.status.success(), "docker-compose config refused docker-compose.yml:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_yaml::from_slice(&out.stdout).expect("docker-compose config prints YAML")
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.trim_matches('/').parse().ok()).unwrap_or_else(|| panic!("no port in {addr:?}"))
}

fn host_of(addr: &str) -> &str {
    let addr = addr.split("://").last().unwrap();
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

struct SluiceService {
    name: String,
    role: String,
    config: PathBuf,
    env: BTreeMap<String, String>,
}

fn sluice_services(compose: &Value) -> Vec<SluiceService> {
    let services = compose["services"].as_mapping().expect("services");
    let mut found = Vec::new();
    for (name, service) in services {
        if service.get("build").is_none() {
            continue;
        }
        let name = str_of(name);
        let command: Vec<String> = service["command"].as_sequence().expect("a sluice service has a command").iter().map(str_of).collect();
        let arg = |flag: &str| command.iter().position(|a| a == flag).and_then(|i| command.get(i + 1)).cloned();
        assert_eq!(command.first().map(String::as_str), Some("run"), "{name}: sluice services run `sluice run`");
        let config = arg("--config").unwrap_or_else(|| panic!("{name}: no --config"));
        let role = arg("--role").unwrap_or_else(|| panic!("{name}: no --role"));
        let env = service["environment"].as_mapping().map_or_else(BTreeMap::new, |m| m.iter().map(|(k, v)| (str_of(k), str_of(v))).collect());
        found.push(SluiceService { name, role, config: PathBuf::from(config), env });
    }
    found
}

/// The `${VAR}` names a config file reads.
fn vars_in(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    re.captures_iter(text).map(|c| c[1].to_string()).collect()
}

/// Variables the binary itself reads, besides those of the config file.
const BINARY_ENV: &[&str] = &["SLUICE_ROLE", "SLUICE_LOG_FORMAT", "RUST_LOG"];

#[test]
fn compose_file_is_valid_and_agrees_with_the_code_and_its_config_files() {
    let compose = compose_config();
    let root = repo();
    let services = compose["services"].as_mapping().unwrap();
    let service = |name: &str| services.get(name).unwrap_or_else(|| panic!("no service {name:?} in docker-compose.yml"));
    let sluice = sluice_services(&compose);
    let roles: BTreeSet<&str> = sluice.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(roles, BTreeSet::from(["collector", "router"]), "the scaled-out shape has collector and router roles");
    assert!(sluice.iter().filter(|s| s.role == "collector").count() >= 2, "two collectors behind the load balancer");
    assert!(sluice.iter().filter(|s| s.role == "router").count() >= 2, "two routers sharing the partitions");

    let mut collector_port = None;
    let mut admin_port = None;
    for s in &sluice {
        // The image's working directory holds config/ and transforms/ as in the repository.
        let path = root.join(&s.config);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: config {} unreadable: {e}", s.name, s.config.display()));
        for var in s.env.keys() {
            assert!(
                vars_in(&text).contains(var) || BINARY_ENV.contains(&var.as_str()),
                "{}: sets {var}, which neither {} nor the binary reads (a typo?)",
                s.name,
                s.config.display()
            );
        }
        // Sluice's own loader, with exactly the service's environment: a variable the compose
        // file forgot to set fails here as it would in the container.
        let config = sluice::config::parse(&text, &s.config.display().to_string(), |v| s.env.get(v).cloned())
            .unwrap_or_else(|e| panic!("{}: sluice rejects its config with the compose environment: {e}", s.name));
        let listen = port_of(&config.collector.listen);
        let admin = port_of(&config.admin.as_ref().map_or(sluice::config::DEFAULT_ADMIN_LISTEN.to_string(), |a| a.listen.clone()));
        assert!(config.collector.listen.starts_with("0.0.0.0:"), "{}: the collector must bind every interface in a container", s.name);
        assert_eq!(*collector_port.get_or_insert(listen), listen, "every collector on the same port");
        assert_eq!(*admin_port.get_or_insert(admin), admin, "every role's admin listener on the same port");
        assert_eq!(admin, port_of(sluice::config::DEFAULT_ADMIN_LISTEN), "{}: admin port differs from the code's default", s.name);

        // The log: Kafka on the compose network, at the broker's advertised listener.
        let interpolated = sluice::config::interpolate(&text, "compose", |v| s.env.get(v).cloned()).unwrap();
        let yaml: Value = serde_yaml::from_str(&interpolated).unwrap();
        assert_eq!(yaml["log"]["backend"].as_str(), Some("kafka"), "{}: the scaled-out shape runs on Kafka", s.name);
        let brokers = str_of(&yaml["log"]["kafka"]["brokers"]);
        let kafka_env = &service(host_of(&brokers))["environment"];
        let advertised = str_of(&kafka_env["KAFKA_ADVERTISED_LISTENERS"]);
        assert!(advertised.contains(&format!("//{brokers}")), "{}: brokers {brokers} is not what Kafka advertises ({advertised})", s.name);

        // The S3 destination: MinIO's service, the bucket the setup job creates, its credentials.
        for d in yaml["destinations"].as_sequence().unwrap() {
            let sink = &d["sink"];
            if sink["type"].as_str() != Some("s3") {
                continue;
            }
            let endpoint = str_of(&sink["endpoint"]);
            let minio = service(host_of(&endpoint));
            let minio_env = &minio["environment"];
            assert_eq!(str_of(&sink["access_key_id"]), str_of(&minio_env["MINIO_ROOT_USER"]), "{}: S3 key is not MinIO's user", s.name);
            assert_eq!(str_of(&sink["secret_access_key"]), str_of(&minio_env["MINIO_ROOT_PASSWORD"]), "{}: S3 secret", s.name);
            let setup = serde_yaml::to_string(&service("minio-setup")["command"]).unwrap();
            let bucket = str_of(&sink["bucket"]);
            assert!(setup.contains(&format!("local/{bucket}")), "{}: bucket {bucket} is not the one minio-setup creates", s.name);
            assert_eq!(port_of(&endpoint), 9000, "MinIO's S3 API port");
        }
    }
    let (collector_port, admin_port) = (collector_port.unwrap(), admin_port.unwrap());

    // The load balancer sends to every collector, on the collector's port.
    let nginx = std::fs::read_to_string(root.join("config/compose/nginx.conf")).unwrap();
    // The `server` entries of the upstream block that `proxy_pass` names (not the `server {}` block).
    let upstream = nginx.split("proxy_pass http://").nth(1).and_then(|r| r.split(';').next()).expect("nginx proxy_pass");
    let block = nginx.split(&format!("upstream {upstream} {{")).nth(1).and_then(|r| r.split('}').next()).expect("its upstream block");
    let upstreams: BTreeSet<String> =
        block.lines().filter_map(|l| l.trim().strip_prefix("server ")).map(|l| l.split_whitespace().next().unwrap().to_string()).collect();
    let collectors: BTreeSet<String> =
        sluice.iter().filter(|s| s.role == "collector").map(|s| format!("{}:{collector_port}", s.name)).collect();
    assert_eq!(upstreams, collectors, "nginx upstreams vs collector services");
    assert!(nginx.contains("client_max_body_size 4m"), "nginx must accept the collector's 4 MiB bodies");

    // Prometheus scrapes every role on its admin port.
    let prom: Value = serde_yaml::from_str(&std::fs::read_to_string(root.join("config/compose/prometheus.yml")).unwrap()).unwrap();
    let targets: BTreeSet<String> = prom["scrape_configs"][0]["static_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|c| c["targets"].as_sequence().unwrap().iter().map(str_of))
        .collect();
    let expected: BTreeSet<String> = sluice.iter().map(|s| format!("{}:{admin_port}", s.name)).collect();
    assert_eq!(targets, expected, "Prometheus targets vs Sluice services");
    assert!(str_of(&services[&Value::from("grafana")]["volumes"][0]).contains("config/compose/grafana-datasource.yml"));
    let datasource = std::fs::read_to_string(root.join("config/compose/grafana-datasource.yml")).unwrap();
    assert!(datasource.contains("url: http://prometheus:9090"), "Grafana's datasource is the compose Prometheus");

    // Every file mounted from the repository exists.
    for (name, s) in services {
        for v in s.get("volumes").and_then(Value::as_sequence).into_iter().flatten() {
            let spec = serde_yaml::to_string(v).unwrap();
            let source = v.get("source").map(str_of).unwrap_or_else(|| spec.split(':').next().unwrap().trim().to_string());
            if source.starts_with('/') || source.starts_with('.') {
                let path = if source.starts_with('/') { PathBuf::from(&source) } else { root.join(&source) };
                assert!(path.exists(), "{}: mounts {source}, which does not exist", str_of(name));
            }
        }
    }

    // The published ingest port is the load balancer's, on the collector's port.
    let lb_ports = serde_yaml::to_string(&service("load-balancer")["ports"]).unwrap();
    assert!(lb_ports.contains(&collector_port.to_string()), "the load balancer publishes {collector_port}: {lb_ports}");
}

#[test]
fn dockerfile_ports_and_default_config_agree_with_the_code() {
    let root = repo();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let expose: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    let env = |var: &str| {
        let at = dockerfile.find(&format!("{var}=")).unwrap_or_else(|| panic!("the Dockerfile sets no {var}"));
        dockerfile[at + var.len() + 1..].split_whitespace().next().unwrap().to_string()
    };
    let (listen, admin, data_dir) = (env("SLUICE_LISTEN"), env("SLUICE_ADMIN_LISTEN"), env("SLUICE_DATA_DIR"));
    assert_eq!(expose, BTreeSet::from([port_of(&listen), port_of(&admin)]), "EXPOSE vs the listeners the image sets");
    assert!(dockerfile.contains(&format!("VOLUME [\"{data_dir}\"]")), "the data dir is a volume");
    assert!(dockerfile.contains("USER sluice"), "the image runs as a non-root user");
    // The image's default command: config/sluice.yaml with the image's environment, which must
    // load and listen where EXPOSE says.
    let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let config_path = &cmd[cmd.iter().position(|a| a == "--config").unwrap() + 1];
    let text = std::fs::read_to_string(root.join(config_path)).unwrap();
    let vars = BTreeMap::from([("SLUICE_LISTEN", listen.clone()), ("SLUICE_ADMIN_LISTEN", admin.clone()), ("SLUICE_DATA_DIR", data_dir.clone())]);
    for var in vars.keys() {
        assert!(vars_in(&text).contains(*var), "{config_path} does not read {var}, which the Dockerfile sets");
    }
    let config = sluice::config::parse(&text, config_path, |v| vars.get(v).cloned()).unwrap();
    assert_eq!(config.collector.listen, listen);
    assert_eq!(config.admin.as_ref().unwrap().listen, admin);
    assert_eq!(config.data_dir, PathBuf::from(&data_dir));
    for dir in ["config", "transforms"] {
        assert!(dockerfile.contains(&format!("COPY {dir} ./{dir}")), "the image carries {dir}/ next to the binary");
    }
}
