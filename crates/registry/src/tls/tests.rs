use super::*;

fn parse(url: &str) -> ConnectOptions {
    ConnectOptions::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn error(url: &str) -> String {
    match ConnectOptions::parse(url) {
        Ok(o) => panic!("{url} parsed: {o:?}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = "postgres://u:secret@db.example:6543/app";

#[test]
fn every_sslmode_parses_and_is_stripped() {
    for mode in SslMode::ALL {
        let root = if mode.verifies() {
            "&sslrootcert=/ca.pem"
        } else {
            ""
        };
        let o = parse(&format!("{BASE}?sslmode={mode}{root}"));
        assert_eq!(o.tls.mode(), mode);
        assert_eq!(o.config.get_user(), Some("u"));
        assert_eq!(o.config.get_dbname(), Some("app"));
        assert_eq!(o.config.get_ports(), [6543]);
    }
}

#[test]
fn absent_sslmode_is_prefer() {
    let o = parse(BASE);
    assert_eq!(o.tls, TlsSettings::default());
    assert_eq!(o.tls.effective_mode(), SslMode::Prefer);
    assert_eq!(o.pg_config().get_ssl_mode(), PgSslMode::Prefer);
}

#[test]
fn modes_map_onto_tokio_postgres() {
    let pg = |url: &str| parse(url).pg_config().get_ssl_mode();
    assert_eq!(pg(&format!("{BASE}?sslmode=disable")), PgSslMode::Disable);
    assert_eq!(pg(&format!("{BASE}?sslmode=require")), PgSslMode::Require);
    assert_eq!(
        pg(&format!("{BASE}?sslmode=verify-ca&sslrootcert=/c")),
        PgSslMode::Require
    );
    assert_eq!(
        pg(&format!("{BASE}?sslmode=verify-full&sslrootcert=/c")),
        PgSslMode::Require
    );
}

#[test]
fn require_with_a_root_cert_verifies_the_chain_as_libpq_does() {
    let o = parse(&format!("{BASE}?sslmode=require&sslrootcert=/ca.pem"));
    assert_eq!(o.tls.mode(), SslMode::Require);
    assert_eq!(o.tls.effective_mode(), SslMode::VerifyCa);
    let plain = parse(&format!("{BASE}?sslmode=require"));
    assert_eq!(plain.tls.effective_mode(), SslMode::Require);
}

#[test]
fn sslrootcert_file_and_system() {
    let o = parse(&format!(
        "{BASE}?sslmode=verify-full&sslrootcert=%2Fetc%2Fpg%20certs%2Fca.pem"
    ));
    assert_eq!(
        o.tls.root_cert(),
        Some(&RootCert::File("/etc/pg certs/ca.pem".into()))
    );
    let o = parse(&format!("{BASE}?sslrootcert=system"));
    assert_eq!(o.tls.root_cert(), Some(&RootCert::System));
    assert_eq!(
        o.tls.mode(),
        SslMode::VerifyFull,
        "libpq's default with system"
    );
    let o = parse(&format!("{BASE}?sslrootcert=system&sslmode=verify-full"));
    assert_eq!(o.tls.mode(), SslMode::VerifyFull);
}

#[test]
fn other_parameters_go_to_tokio_postgres() {
    let o = parse(&format!(
        "{BASE}?application_name=x&sslmode=verify-full&connect_timeout=7&sslrootcert=/c&channel_binding=require"
    ));
    assert_eq!(o.config.get_application_name(), Some("x"));
    assert_eq!(
        o.config.get_connect_timeout(),
        Some(&std::time::Duration::from_secs(7))
    );
    assert_eq!(
        o.config.get_channel_binding(),
        tokio_postgres::config::ChannelBinding::Require
    );
    let (rest, _) = split_tls_params(&format!(
        "{BASE}?application_name=x&sslmode=disable&connect_timeout=7"
    ))
    .unwrap();
    assert_eq!(rest, format!("{BASE}?application_name=x&connect_timeout=7"));
    let (rest, _) = split_tls_params(&format!("{BASE}?sslmode=disable")).unwrap();
    assert_eq!(rest, BASE);
}

#[test]
fn client_certificate_needs_cert_and_key() {
    let o = parse(&format!("{BASE}?sslcert=/c.pem&sslkey=/k.pem"));
    assert_eq!(
        o.tls.client_cert(),
        Some(&ClientCert {
            cert: "/c.pem".into(),
            key: "/k.pem".into()
        })
    );
    assert!(error(&format!("{BASE}?sslcert=/c.pem")).contains("sslcert is given without sslkey"));
    assert!(error(&format!("{BASE}?sslkey=/k.pem")).contains("sslkey is given without sslcert"));
}

#[test]
fn bad_values_are_clear_errors() {
    let e = error(&format!("{BASE}?sslmode=verify_full"));
    assert!(e.contains("invalid sslmode \"verify_full\""), "{e}");
    assert!(e.contains("verify-full"), "{e}");
    let e = error(&format!("{BASE}?sslmode=verify-full"));
    assert!(e.contains("sslmode=verify-full needs sslrootcert"), "{e}");
    let e = error(&format!("{BASE}?sslmode=verify-ca"));
    assert!(e.contains("sslmode=verify-ca needs sslrootcert"), "{e}");
    let e = error(&format!("{BASE}?sslmode=require&sslrootcert=system"));
    assert!(
        e.contains("sslrootcert=system needs sslmode=verify-full"),
        "{e}"
    );
    let e = error(&format!("{BASE}?sslmode=verify-ca&sslrootcert=system"));
    assert!(e.contains("got sslmode=verify-ca"), "{e}");
    assert!(error(&format!("{BASE}?sslrootcert=")).contains("sslrootcert is empty"));
    assert!(error(&format!("{BASE}?sslmode=")).contains("sslmode is empty"));
    let e = error(&format!("{BASE}?sslmode=disable&sslmode=require"));
    assert!(e.contains("sslmode is given more than once"), "{e}");
    let e = error(&format!("{BASE}?sslcrl=/crl.pem"));
    assert!(e.contains("sslcrl is not supported"), "{e}");
    let e = error(&format!("{BASE}?sslrootcert=%zz"));
    assert!(e.contains("%-escape"), "{e}");
    for e in [
        error(&format!("{BASE}?sslmode=bogus")),
        error(&format!("{BASE}?nonsense=1")),
    ] {
        assert!(!e.contains("secret"), "an error repeats the password: {e}");
    }
}

#[test]
fn key_value_strings_too() {
    let o = parse(
        "host=db.example port=6543 user=u password='it\\'s' dbname=app sslmode=verify-full sslrootcert='/my certs/ca.pem'",
    );
    assert_eq!(o.tls.mode(), SslMode::VerifyFull);
    assert_eq!(
        o.tls.root_cert(),
        Some(&RootCert::File("/my certs/ca.pem".into()))
    );
    assert_eq!(o.config.get_dbname(), Some("app"));
    let (rest, _) = split_tls_params("host=h sslmode = disable  user=u").unwrap();
    assert_eq!(rest, "host=h user=u");
    let (rest, tls) = split_tls_params(r"host=h sslrootcert=/a\ b sslmode=verify-ca").unwrap();
    assert_eq!(rest, "host=h");
    assert_eq!(tls.root_cert(), Some(&RootCert::File("/a b".into())));
    assert!(ConnectOptions::parse("host=h sslmode").is_err());
    assert!(ConnectOptions::parse("host=h sslrootcert='/x").is_err());
}

#[test]
fn url_params_round_trip() {
    let o = parse(&format!(
        "{BASE}?sslmode=verify-ca&sslrootcert=/a%20b/ca.pem&sslcert=/c&sslkey=/k"
    ));
    let again = parse(&format!("{BASE}?{}", o.tls.url_params()));
    assert_eq!(again.tls, o.tls);
}

#[test]
fn hosts_inherit_what_they_do_not_set() {
    let url = parse(&format!(
        "{BASE}?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/c&sslkey=/k"
    ))
    .tls;
    let inherited = url.for_host(&HostTls::default()).unwrap();
    assert_eq!(inherited, url.without_client_cert());
    let own = url
        .for_host(&HostTls {
            sslmode: Some(SslMode::VerifyCa),
            sslrootcert: Some(RootCert::File("/other.pem".into())),
        })
        .unwrap();
    assert_eq!(own.effective_mode(), SslMode::VerifyCa);
    assert_eq!(own.root_cert(), Some(&RootCert::File("/other.pem".into())));
    let system = TlsSettings::default()
        .for_host(&HostTls {
            sslmode: None,
            sslrootcert: Some(RootCert::System),
        })
        .unwrap();
    assert_eq!(system.mode(), SslMode::VerifyFull);
    let e = TlsSettings::default()
        .for_host(&HostTls {
            sslmode: Some(SslMode::VerifyFull),
            sslrootcert: None,
        })
        .unwrap_err();
    assert!(matches!(e, TlsError::NoRootCert(SslMode::VerifyFull)));
    assert!(HostTls::from_columns(Some("nope"), None).is_err());
    assert_eq!(
        HostTls::from_columns(Some("verify-ca"), Some("system")).unwrap(),
        HostTls {
            sslmode: Some(SslMode::VerifyCa),
            sslrootcert: Some(RootCert::System)
        }
    );
}

#[test]
fn missing_or_empty_ca_files_are_named() {
    let tls =
        TlsSettings::from_params(Some("verify-full"), Some("/nonexistent/ca.pem"), None, None)
            .unwrap();
    let e = tls.connector().unwrap_err().to_string();
    assert!(
        e.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("tp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let tls = TlsSettings::from_params(Some("verify-ca"), empty.to_str(), None, None).unwrap();
    let e = tls.connector().unwrap_err().to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Modes that verify nothing read no file.
    let tls = TlsSettings::from_params(Some("prefer"), Some("/nonexistent"), None, None).unwrap();
    assert!(tls.connector().is_ok());
}
