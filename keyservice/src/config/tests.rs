//! The configuration's unit tests: parsing, validation and the errors a wrong file gets.

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

fn env(name: &str) -> Option<String> {
    (name == "KS_SECRET_RS1").then(|| SECRET.to_owned())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, env)
}

fn field_of(result: Result<Config, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { field, .. }) => field,
        Err(other) => panic!("expected an invalid field, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn the_documented_shape_works() {
    let config = parse(
        r#"
        listen = "127.0.0.1:8080"
        data_dir = "./keyservice-data"
        [namespaces.my_cool_website]
        allow = ["127.0.0.1/32", "::1/128"]
        credentials = [ { key_id = "rs-1", secret_env = "KS_SECRET_RS1" } ]
        "#,
    )
    .unwrap();
    let ns = &config.namespaces["my_cool_website"];
    assert_eq!(ns.credentials[0].key_id, "rs-1");
    assert_eq!(ns.credentials[0].secret.expose(), SECRET);
    assert!(ns.allows("127.0.0.1".parse().unwrap()));
    assert!(ns.allows("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!ns.allows("127.0.0.2".parse().unwrap()));
    assert_eq!(config.max_clock_skew, Duration::from_secs(300));
}

#[test]
fn the_memory_budget_is_read_and_checked() {
    assert_eq!(parse("").unwrap().cache_bytes, 64 * 1024 * 1024);
    assert_eq!(parse("cache_bytes = 0").unwrap().cache_bytes, 0);
    assert_eq!(parse("cache_bytes = 1048576").unwrap().cache_bytes, 1 << 20);
    // Not a count of bytes: refused, naming the line.
    for bad in ["cache_bytes = -1", "cache_bytes = \"64MiB\""] {
        let error = parse(&format!("\n{bad}")).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }
}

#[test]
fn storage_settings_are_checked() {
    let storage = |body: &str| parse(&format!("[storage]\n{body}"));
    let config = storage(
        "backend = \"postgres\"\nurl = \"postgres://ks@db.internal:5432/keyservice\"\n\
         password_env = \"KS_SECRET_RS1\"\npool_size = 4\nstatement_timeout_ms = 250",
    )
    .unwrap();
    let Storage::Postgres(database) = &config.storage else { panic!("not postgres") };
    assert_eq!((database.pool_size, database.statement_timeout), (4, Duration::from_millis(250)));
    assert_eq!(database.password.as_ref().unwrap().expose(), SECRET);
    assert!(!format!("{config:?}").contains(SECRET), "the password shows in Debug");
    assert!(matches!(parse("").unwrap().storage, Storage::Sled));

    let with_password = storage("backend = \"postgres\"\nurl = \"postgres://ks:hunter2@db/keyservice\"");
    let error = with_password.err().unwrap().to_string();
    assert!(error.contains("storage.url") && error.contains("password_env"), "{error}");
    assert!(!error.contains("hunter2"), "the error shows the password: {error}");
    assert_eq!(field_of(storage("backend = \"postgres\"")), "storage.url");
    assert_eq!(field_of(storage("backend = \"postgres\"\nurl = \"mysql://x\"")), "storage.url");
    assert_eq!(field_of(storage("backend = \"postgres\"\nurl = \"postgres://db\"")), "storage.url");
    assert_eq!(field_of(storage("backend = \"sled\"\npool_size = 3")), "storage.pool_size");
    assert_eq!(
        field_of(storage("backend = \"postgres\"\nurl = \"postgres://ks@db/k\"\npassword_env = \"UNSET\"")),
        "storage.password_env"
    );
    assert_eq!(
        field_of(storage("backend = \"postgres\"\nurl = \"postgres://ks@db/k\"\nstatement_timeout_ms = 1")),
        "storage.statement_timeout_ms"
    );
    assert!(matches!(storage("backend = \"mongo\""), Err(ConfigError::Syntax(_))));
    let twice = storage(
        "backend = \"postgres\"\nurl = \"postgres://ks@db/k\"\npassword_env = \"KS_SECRET_RS1\"\npassword_file = \"/p\"",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(twice.contains("`storage`") && twice.contains("password_env, password_file"), "{twice}");
    assert_eq!(field_of(parse("node_id = \"a b\"")), "node_id");
    assert_eq!(parse("node_id = \"ks-1\"").unwrap().node_id, "ks-1");
}

#[test]
fn errors_name_the_field() {
    let ns = |body: &str| format!("[namespaces.shop]\n{body}");
    let good_cred = format!(r#"credentials = [{{ key_id = "k", secret = "{SECRET}" }}]"#);
    assert_eq!(field_of(parse("listen = \"nope\"")), "listen");
    assert_eq!(field_of(parse("max_clock_skew_secs = 90000")), "max_clock_skew_secs");
    assert_eq!(field_of(parse("init_ttl_secs = 0")), "init_ttl_secs");
    assert_eq!(field_of(parse("max_header_bytes = 100")), "max_header_bytes");
    assert_eq!(field_of(parse("metrics_listen = \"everywhere\"")), "metrics_listen");
    assert_eq!(field_of(parse("trusted_proxies = [\"10.0.0.0/99\"]")), "trusted_proxies[0]");
    assert_eq!(field_of(parse("trusted_proxies = [\"10.0.0.0/8\"]")), "forwarded_header");
    assert_eq!(field_of(parse("forwarded_header = \"forwarded\"")), "forwarded_header");
    assert_eq!(
        field_of(parse("trusted_proxies = [\"10.0.0.1\"]\nforwarded_header = \"forwarded\"\ntrusted_hops = 0")),
        "trusted_hops"
    );
    assert_eq!(field_of(parse("client_prefix_v4 = 33")), "client_prefix_v4");
    assert_eq!(field_of(parse("client_prefix_v6 = 8")), "client_prefix_v6");
    assert_eq!(field_of(parse("cors_origins = [\"https://app.example.com/path\"]")), "cors_origins[0]");
    assert_eq!(field_of(parse("init_per_minute = 0")), "init_per_minute");
    assert_eq!(field_of(parse("shutdown_grace_secs = 0")), "shutdown_grace_secs");
    assert_eq!(field_of(parse(&ns(&format!("allow = []\n{good_cred}")))), "namespaces.shop.allow");
    assert_eq!(field_of(parse(&ns(&format!("allow = [\"10.0.0.0/33\"]\n{good_cred}")))), "namespaces.shop.allow[0]");
    assert_eq!(field_of(parse(&ns("allow = [\"::1\"]\ncredentials = []"))), "namespaces.shop.credentials");
    assert_eq!(
        field_of(parse(&ns("allow = [\"::1\"]\ncredentials = [{ key_id = \"k\" }]"))),
        "namespaces.shop.credentials[0]"
    );
    let both = format!(
        r#"allow = ["::1"]
credentials = [{{ key_id = "k", secret = "{SECRET}", secret_env = "KS_SECRET_RS1" }}]"#
    );
    let error = parse(&ns(&both)).err().unwrap().to_string();
    assert!(error.contains("credentials[0]") && error.contains("secret, secret_env"), "{error}");
    assert!(!error.contains(SECRET), "the error shows the secret: {error}");
    assert_eq!(
        field_of(parse(&ns("allow = [\"::1\"]\ncredentials = [{ key_id = \"k\", secret_env = \"MISSING\" }]"))),
        "namespaces.shop.credentials[0].secret_env"
    );
    assert_eq!(
        field_of(parse(&ns("allow = [\"::1\"]\ncredentials = [{ key_id = \"k\", secret = \"short\" }]"))),
        "namespaces.shop.credentials[0].secret"
    );
    assert_eq!(
        field_of(parse(&ns(&format!(
            "allow = [\"::1\"]\ncredentials = [{{ key_id = \"a,b\", secret = \"{SECRET}\" }}]"
        )))),
        "namespaces.shop.credentials[0].key_id"
    );
    assert_eq!(
        field_of(parse(&ns(&format!(
            "allow = [\"::1\"]\ncredentials = [{{ key_id = \"k\", secret = \"{SECRET}\", secret_env = \"KS_SECRET_RS1\" }}]"
        )))),
        "namespaces.shop.credentials[0]"
    );
    let twice =
        format!("[namespaces.a]\nallow = [\"::1\"]\n{good_cred}\n[namespaces.b]\nallow = [\"::1\"]\n{good_cred}");
    assert_eq!(field_of(parse(&twice)), "namespaces.b.credentials[0].key_id");
    assert_eq!(
        field_of(parse(&format!("[namespaces.\"bad name\"]\nallow = [\"::1\"]\n{good_cred}"))),
        "namespaces.bad name"
    );
}

#[test]
fn syntax_errors_name_unknown_fields_and_hide_values() {
    let err = parse("max_conections = 5").unwrap_err().to_string();
    assert!(err.contains("max_conections"), "{err}");
    let err = parse(
        "[namespaces.shop]\nallow = [\"::1\"]\ncredentials = [{ key_id = \"k\", secret = 12345678901234567890 }]",
    )
    .unwrap_err()
    .to_string();
    assert!(!err.contains("12345678901234567890"), "{err}");
}

#[test]
fn secret_file_is_read_without_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let text = format!(
        "[namespaces.shop]\nallow = [\"::1\"]\ncredentials = [{{ key_id = \"k\", secret_file = {:?} }}]",
        path.display().to_string()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = parse(&text).unwrap_err().to_string();
        assert!(refused.contains("secret_file") && refused.contains("644") && !refused.contains(SECRET), "{refused}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = parse(&format!(
        "[namespaces.shop]\nallow = [\"::1\"]\ncredentials = [{{ key_id = \"k\", secret_file = {:?} }}]",
        path.display().to_string()
    ))
    .unwrap();
    assert_eq!(config.namespaces["shop"].credentials[0].secret.expose(), SECRET);
}

#[test]
fn the_deployment_example_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("rs-1");
    std::fs::write(&secret, SECRET).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = include_str!("../../../deploy/keyservice.toml")
        .replace("/etc/keyservice/secrets/rs-1", secret.to_str().unwrap());
    let config = parse(&text).unwrap();
    assert!(config.tls.is_some());
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.namespaces["my_cool_website"].connect_budget.users_per_window, 10_000);
}

#[test]
fn files_default_to_beside_the_data_directory() {
    let config = parse("data_dir = \"/srv/ks/one\"\naudit_log_file = \"/var/log/ks.jsonl\"").unwrap();
    assert_eq!(config.master_key_file, PathBuf::from("/srv/ks/one.master.key"));
    assert_eq!(config.erasure_ledger_file, PathBuf::from("/srv/ks/one.erasures.jsonl"));
    assert_eq!(config.admin_socket, PathBuf::from("/srv/ks/one.admin.sock"));
    assert_eq!(config.audit_log_file, PathBuf::from("/var/log/ks.jsonl"), "a configured path stays");
    let two = Config::for_data_dir(PathBuf::from("/srv/ks/two"));
    assert_ne!(two.master_key_file, config.master_key_file);
    assert_eq!(Config::default().master_key_file, PathBuf::from("./keyservice-data.master.key"));
}

#[test]
fn dev_config_allows_loopback_only() {
    let (config, secret) = Config::dev(PathBuf::from("/tmp/x")).unwrap();
    let ns = &config.namespaces[DEV_NAMESPACE];
    assert_eq!(ns.credentials[0].secret, secret);
    assert!(ns.allows("127.0.0.1".parse().unwrap()));
    assert!(ns.allows("::1".parse().unwrap()));
    assert!(!ns.allows("192.0.2.1".parse().unwrap()));
}
