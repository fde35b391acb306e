//! The compose stack's files, checked structurally: CI has no Docker engine, so
//! `docker-compose.yml`, the `Dockerfile` and the nginx template are read and checked
//! against each other and against the demo. `server/tests/deploy/stack.rs` runs the same topology from
//! local processes.
//!
//! Needs `python3` with PyYAML (to read the compose file).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use testkit::*;

#[test]
fn compose_has_its_five_services_and_only_nginx_and_the_service_are_reachable() {
    let compose = compose();
    assert!(
        compose.get("version").is_none(),
        "compose v2 files need no top-level `version`"
    );
    for name in ["redis", "app1", "app2", SERVICE, "nginx"] {
        service(&compose, name);
    }
    assert!(
        scalar(&service(&compose, "redis")["image"]).starts_with("redis:"),
        "redis runs the official image"
    );
    assert!(
        scalar(&service(&compose, "nginx")["image"]).starts_with("nginx"),
        "nginx runs the official image"
    );

    let services = compose["services"].as_object().unwrap();
    let publishing: Vec<&String> = services
        .iter()
        .filter(|(_, s)| {
            s.get("ports")
                .is_some_and(|p| p.as_array().is_none_or(|p| !p.is_empty()))
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        publishing,
        ["nginx", SERVICE],
        "only nginx and the service may publish a port: the apps trust one proxy hop, so a \
         client reaching them directly could choose its own key"
    );

    // nginx listens where its published port points.
    let nginx = service(&compose, "nginx");
    let (_, container_port) = published(nginx);
    assert_eq!(
        environment(nginx).get("NGINX_PORT"),
        Some(&container_port),
        "NGINX_PORT is what nginx listens on, so it must be the published container port"
    );

    // The service is published on the host's loopback, at the port it listens on.
    let (host_ip, container_port) = published(service(&compose, SERVICE));
    assert_eq!(
        host_ip.as_deref(),
        Some("127.0.0.1"),
        "{SERVICE}: published on the host's loopback only"
    );
    assert_eq!(
        Some(&container_port),
        app_environment(&compose, SERVICE).get("PORT"),
        "{SERVICE}: the published container port is its PORT"
    );
}

/// A service's one published port: the host address it binds (if any) and the container
/// port.
fn published(service: &Value) -> (Option<String>, String) {
    let ports = service["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    match &ports[0] {
        Value::String(short) => {
            let parts: Vec<&str> = short.split(':').collect();
            let container = parts[parts.len() - 1].trim_end_matches("/tcp").to_owned();
            let host_ip = (parts.len() == 3).then(|| parts[0].to_owned());
            (host_ip, container)
        }
        long => (long.get("host_ip").map(scalar), scalar(&long["target"])),
    }
}

/// With Redis gone, each process deciding on the shared limits decides alone with its
/// share of every limit: the number of such processes the stack runs, in the compose file
/// and in the script without Docker.
#[test]
fn the_deciders_know_how_many_share_the_limits() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let built: Vec<&String> = services
        .iter()
        .filter(|(_, s)| s.get("build").is_some_and(|b| scalar(b) == "."))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(built, DECIDERS, "the processes built from the Dockerfile");
    for decider in DECIDERS {
        let env = app_environment(&compose, decider);
        assert_eq!(
            fallback_instances(&env),
            DECIDERS.len() as u32,
            "{decider}: with Redis down, {} processes deciding alone must each take 1/{} of a \
             limit",
            DECIDERS.len(),
            DECIDERS.len()
        );
    }
    let script = std::fs::read_to_string(repo_file("scripts/stack-without-docker.sh")).unwrap();
    assert!(
        script.contains(&format!("LOCAL_FALLBACK_INSTANCES={}", DECIDERS.len())),
        "scripts/stack-without-docker.sh must tell its {} deciders how many they are",
        DECIDERS.len()
    );
}

/// The service runs `tollgate serve` on the apps' Redis, key prefix and rules file, so
/// that its limits, runtime changes and statistics are theirs; every variable compose sets
/// on it is one `tollgate serve` reads.
#[test]
fn compose_service_shares_the_apps_redis_and_rules() {
    let compose = compose();
    let tollgate = service(&compose, SERVICE);
    let command: Vec<String> = tollgate["command"]
        .as_array()
        .expect("{SERVICE}: command as a list")
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(command, ["tollgate", "serve"]);
    assert_eq!(
        dependency(tollgate, "redis").as_deref(),
        Some("service_healthy"),
        "{SERVICE}: starts once Redis answers"
    );

    let env = app_environment(&compose, SERVICE);
    // `tollgate serve`'s flags: serve.rs and the flag groups it flattens in (limits.rs).
    let serve = ["serve.rs", "limits.rs"]
        .map(|file| {
            std::fs::read_to_string(repo_file(&format!("server/src/bin/tollgate/{file}"))).unwrap()
        })
        .concat();
    for name in env.keys() {
        assert!(
            serve.contains(&format!("env = \"{name}\"")) || name == "RUST_LOG",
            "{SERVICE} sets {name}, which `tollgate serve` never reads"
        );
    }
    for app in APPS {
        let app_env = app_environment(&compose, app);
        for name in [
            "REDIS_URL",
            "REDIS_PREFIX",
            "RATE_LIMIT_RULES_PATH",
            "TOLLGATE_ADMIN_TOKEN",
        ] {
            assert_eq!(
                env.get(name),
                app_env.get(name),
                "{SERVICE} and {app} must agree on {name}"
            );
        }
        assert_eq!(
            mounts(tollgate),
            mounts(service(&compose, app)),
            "{SERVICE} reads the rules through the apps' mount"
        );
    }
    assert_eq!(
        env["HOST"], "0.0.0.0",
        "reachable through its published port"
    );
}

#[test]
fn compose_apps_share_redis_trust_one_hop_and_follow_the_mounted_rules() {
    let compose = compose();
    let nginx_env = environment(service(&compose, "nginx"));
    for (app, address_var) in APPS.iter().zip(["APP1_ADDR", "APP2_ADDR"]) {
        let app_service = service(&compose, app);
        let env = app_environment(&compose, app);
        let get = |name: &str| {
            env.get(name)
                .unwrap_or_else(|| panic!("{app}: {name} is not set"))
                .as_str()
        };

        assert_eq!(
            scalar(&app_service["build"]),
            ".",
            "{app}: built from the top-level Dockerfile"
        );
        assert_eq!(
            get("REDIS_URL"),
            "redis://redis:6379",
            "{app}: the shared Redis"
        );
        assert_eq!(
            dependency(app_service, "redis").as_deref(),
            Some("service_healthy"),
            "{app}: starts once Redis answers"
        );
        assert!(
            env.get("TRUSTED_PROXY_HOPS").map(String::as_str) == Some("1")
                || env.get("TRUSTED_PROXIES").is_some_and(|p| !p.is_empty()),
            "{app}: must trust exactly nginx (TRUSTED_PROXY_HOPS=1 or TRUSTED_PROXIES)"
        );
        // nginx reaches the apps from the compose network, in the default trusted peers;
        // trusting every peer would let anything that reaches an app choose its key.
        assert_ne!(
            env.get("TRUSTED_PROXIES").map(|p| p.trim()),
            Some("*"),
            "{app}: trust nginx, not every peer"
        );
        assert_eq!(
            get("HOST"),
            "0.0.0.0",
            "{app}: must listen on the compose network"
        );

        // nginx reaches this app at the port it listens on.
        let (host, port) = nginx_env
            .get(address_var)
            .and_then(|a| a.split_once(':'))
            .unwrap_or_else(|| panic!("nginx: {address_var} must be {app}:PORT"));
        assert_eq!((host, port), (*app, get("PORT")), "nginx's {address_var}");

        // RATE_LIMIT_RULES_PATH is the repository's rules file, through a directory mount.
        let rules_path = get("RATE_LIMIT_RULES_PATH");
        let mounts = mounts(app_service);
        let mount = mounts
            .iter()
            .find(|m| {
                rules_path
                    .strip_prefix(m.target.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .unwrap_or_else(|| {
                panic!("{app}: RATE_LIMIT_RULES_PATH={rules_path} is under no mount")
            });
        let inside = rules_path[mount.target.len()..].trim_start_matches('/');
        let source = host_path(&mount.source);
        assert!(
            source.is_dir(),
            "{app}: mount the rules file's directory, not the file: the layer watches the \
             directory, and a single-file bind mount delivers no change event there (nor \
             shows a file that an editor replaced)"
        );
        assert_eq!(
            std::fs::canonicalize(source.join(inside)).ok(),
            std::fs::canonicalize(repo_file("rate_limits.json")).ok(),
            "{app}: RATE_LIMIT_RULES_PATH={rules_path} must be the repository's rate_limits.json"
        );
        assert!(
            mount.read_only,
            "{app}: the apps only read the rules: mount them :ro"
        );
    }
}

/// The runtime entries live in Redis: the compose Redis keeps an append-only file on a
/// volume, so that a restart does not lose them (issue 24, finding 7).
#[test]
fn compose_redis_keeps_an_append_only_file_on_a_volume() {
    let compose = compose();
    let redis = service(&compose, "redis");
    let command: Vec<String> = redis["command"]
        .as_array()
        .expect("redis: a command list")
        .iter()
        .map(scalar)
        .collect();
    let appendonly = command.iter().position(|arg| arg == "--appendonly");
    assert_eq!(
        appendonly
            .and_then(|at| command.get(at + 1))
            .map(String::as_str),
        Some("yes"),
        "redis: --appendonly yes in {command:?}"
    );
    let data = mounts(redis)
        .into_iter()
        .find(|mount| mount.target == "/data")
        .expect("redis: a volume on /data, where the append-only file is written");
    assert!(
        compose["volumes"].get(&data.source).is_some(),
        "redis: /data is the named volume {:?}, declared under volumes",
        data.source
    );
}

#[test]
fn compose_every_service_has_a_health_check_and_starts_in_order() {
    let compose = compose();
    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();

    let redis = compose_healthcheck(service(&compose, "redis")).expect("redis: healthcheck");
    assert_eq!(redis, ["redis-cli", "ping"]);

    for decider in DECIDERS {
        // The compose healthcheck wins; without one the image's HEALTHCHECK applies.
        let check = compose_healthcheck(service(&compose, decider))
            .or_else(|| image_healthcheck(runtime))
            .unwrap_or_else(|| panic!("{decider}: no health check in compose nor the Dockerfile"));
        assert_eq!(
            check,
            ["tollgate", "healthcheck"],
            "{decider}: `tollgate healthcheck` asks its GET /health"
        );
    }

    let nginx = service(&compose, "nginx");
    let check = compose_healthcheck(nginx)
        .expect("nginx: healthcheck")
        .join(" ");
    let port = environment(nginx)["NGINX_PORT"].clone();
    assert!(
        check.contains(&format!("127.0.0.1:{port}/nginx-health")),
        "nginx: health check must ask its own /nginx-health on port {port}: {check}"
    );
    for app in APPS {
        assert_eq!(
            dependency(nginx, app).as_deref(),
            Some("service_healthy"),
            "nginx: starts once {app} is healthy"
        );
    }
}

/// The Dockerfile's build command, run outside Docker: it still names a package, targets
/// and flags cargo accepts in this workspace, and builds the two files the image copies
/// out. It runs in this test's own target directory and profile (`--release` is kept only
/// when the tests are release builds), so it reuses what the test run built; the profile
/// changes no package, target or feature.
#[test]
fn the_dockerfiles_build_command_builds_what_the_image_copies() {
    let stages = dockerfile_stages();
    let (_, builders) = stages.split_last().unwrap();
    let run = builders
        .iter()
        .flat_map(|stage| args_of(stage, "RUN"))
        .find(|run| run.contains("cargo build"))
        .expect("a builder stage runs cargo build");
    let steps: Vec<&str> = run.split("&&").map(str::trim).collect();
    let build = steps
        .iter()
        .find_map(|step| step.find("cargo build").map(|at| &step[at..]))
        .unwrap();
    let copy = steps
        .iter()
        .find(|step| step.starts_with("cp "))
        .expect("the build copies the binaries out of the target directory");

    // The test binary is <target>/<profile>/deps/deploy-<hash>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    let args: Vec<&str> = build
        .split_whitespace()
        .skip(2)
        .filter(|arg| release || *arg != "--release")
        .collect();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .arg("build")
        .args(&args)
        .current_dir(repo_file(""))
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "`{build}` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let copied: Vec<&str> = copy
        .split_whitespace()
        .filter(|arg| arg.starts_with("target/release/"))
        .collect();
    assert_eq!(copied.len(), 2, "the service and the demo: {copy}");
    for file in copied {
        let built = profile_dir.join(file.trim_start_matches("target/release/"));
        assert!(
            built.is_file(),
            "`{build}` did not build {}",
            built.display()
        );
    }
}

#[test]
fn dockerfile_builds_the_demo_and_the_service_and_runs_them_unprivileged() {
    let stages = dockerfile_stages();
    assert!(
        stages.len() >= 2,
        "a multi-stage build: builder, then runtime"
    );
    let (runtime, builders) = stages.split_last().unwrap();

    let builds_both = builders
        .iter()
        .flat_map(|stage| args_of(stage, "RUN"))
        .any(|run| {
            run.contains("cargo build")
                && run.contains("--release")
                && run.contains("--example demo")
                && run.contains("--bin tollgate")
                && run.contains("-p tollgate-server")
                && run.contains("--locked")
        });
    assert!(
        builds_both,
        "a builder stage runs cargo build --release --locked -p tollgate-server --bin tollgate \
         --example demo"
    );

    let from = args_of(runtime, "FROM").pop().unwrap();
    assert!(
        from.starts_with("debian:") || from.contains("distroless"),
        "a small runtime image, got {from}"
    );
    let copies = args_of(runtime, "COPY");
    for binary in ["/demo", "/tollgate"] {
        assert!(
            copies
                .iter()
                .any(|c| c.starts_with("--from=") && c.ends_with(binary)),
            "the runtime stage copies {binary} from the builder: {copies:?}"
        );
    }
    assert!(
        copies.iter().any(|c| c.starts_with("rate_limits.json ")),
        "the runtime stage ships rate_limits.json: {copies:?}"
    );

    let user = args_of(runtime, "USER")
        .pop()
        .expect("the runtime stage sets a USER");
    let name = user.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "the demo must not run as root: USER {user}"
    );

    let env = image_environment(runtime);
    let exposed: Vec<&str> = args_of(runtime, "EXPOSE")
        .into_iter()
        .flat_map(str::split_whitespace)
        .map(|p| p.trim_end_matches("/tcp"))
        .collect();
    assert_eq!(exposed, [env["PORT"].as_str()], "EXPOSE matches PORT");
    assert_eq!(env["HOST"], "0.0.0.0", "reachable from other containers");
    assert_eq!(
        image_healthcheck(runtime).as_deref(),
        Some(&["tollgate".to_owned(), "healthcheck".to_owned()][..]),
        "HEALTHCHECK CMD [\"tollgate\", \"healthcheck\"]"
    );
}

/// Every variable the stack sets on the apps is one the demo reads, and the demo's
/// essential settings are all set.
#[test]
fn app_environment_is_what_the_demo_reads() {
    let compose = compose();
    let demo = std::fs::read_to_string(repo_file("server/examples/demo.rs")).unwrap();
    let code: String = demo
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let reads = |name: &str| {
        code.contains(&format!("\"{name}\""))
            // tracing-subscriber's EnvFilter reads RUST_LOG itself.
            || (name == "RUST_LOG" && code.contains("EnvFilter::try_from_default_env"))
    };
    for app in APPS {
        let env = app_environment(&compose, app);
        for name in env.keys() {
            assert!(
                reads(name),
                "{app} sets {name}, which server/examples/demo.rs never reads"
            );
        }
        for name in ["REDIS_URL", "RATE_LIMIT_RULES_PATH", "HOST", "PORT"] {
            assert!(
                reads(name),
                "server/examples/demo.rs no longer reads {name}"
            );
            assert!(env.contains_key(name), "{app} does not set {name}");
        }
        let trust = ["TRUSTED_PROXY_HOPS", "TRUSTED_PROXIES"];
        assert!(
            trust.iter().all(|name| reads(name)),
            "server/examples/demo.rs no longer reads {trust:?}"
        );
        assert!(
            trust.iter().any(|name| env.contains_key(*name)),
            "{app} says whom to trust with neither of {trust:?}"
        );
    }
}

#[test]
fn nginx_template_uses_exactly_the_variables_compose_sets() {
    let template = std::fs::read_to_string(repo_file(TEMPLATE)).unwrap();
    let used = template_variables(&template);
    assert_eq!(
        used,
        BTreeSet::from(["APP1_ADDR", "APP2_ADDR", "NGINX_PORT"]),
        "the template's variables"
    );
    let compose = compose();
    let nginx = service(&compose, "nginx");
    // The template the topology tests render is the one the image renders.
    let templates = mounts(nginx)
        .into_iter()
        .find(|m| m.target == "/etc/nginx/templates")
        .expect("nginx: deploy/nginx mounted at /etc/nginx/templates");
    assert_eq!(host_path(&templates.source), host_path("deploy/nginx"));
    assert_eq!(
        Path::new(TEMPLATE).file_name().unwrap(),
        "default.conf.template",
        "rendered as conf.d/default.conf, replacing the image's own default server"
    );
    let nginx_env = environment(nginx);
    for name in &used {
        assert!(
            nginx_env.contains_key(*name),
            "the template uses ${{{name}}}, which compose does not set on nginx: it would \
             stay in the rendered config"
        );
    }
    // nginx writes the entry the apps trust: appended to the client's list, or alone.
    assert!(
        [
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
        ]
        .iter()
        .any(|line| template.contains(line)),
        "{TEMPLATE} must set X-Forwarded-For from the address nginx saw"
    );
    // nginx, not the client, says who the client is: X-Client-ID comes from nginx's map of
    // API keys, which replaces whatever the client sent.
    let client_name = template
        .lines()
        .find_map(|line| line.trim().strip_prefix("map $http_x_api_key $"))
        .map(|rest| rest.trim_end_matches('{').trim())
        .unwrap_or_else(|| panic!("{TEMPLATE} must map X-API-Key to a client name"));
    assert!(
        template.contains(&format!("proxy_set_header X-Client-ID ${client_name};")),
        "{TEMPLATE} must set X-Client-ID from ${client_name}, never pass the client's through"
    );
    for needed in [
        "add_header X-Upstream $upstream_addr always;",
        "location = /nginx-health",
    ] {
        assert!(template.contains(needed), "{TEMPLATE} lacks `{needed}`");
    }

    // The renderer leaves nginx's variables alone, as envsubst with a variable list does.
    assert_eq!(
        render(
            "listen ${NGINX_PORT}; $host ${host} $NGINX_PORTS $NGINX_PORT",
            &[("NGINX_PORT", "80")]
        ),
        "listen 80; $host ${host} $NGINX_PORTS 80"
    );
}
