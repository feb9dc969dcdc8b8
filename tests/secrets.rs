//! Secrets never show: options, and the errors of a `start` that cannot connect,
//! printed through `Debug`, `Display` and their `source()` chain, and everything
//! logged meanwhile, hold no password, proxy password, key file password or AWS
//! session token, whether the connection string is malformed, names a server
//! that does not answer, or one that refuses the credentials, and whether the
//! credentials come in the connection string or in driver options.

mod support;

use std::error::Error as _;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use failover::{Member, Options};
use mongodb::options::{ClientOptions, Credential, ServerAddress};

/// Every secret below contains this, so that one search finds them all.
const MARK: &str = "Qx9Vv";

/// The user's password (with a `/` and a `+`, percent-encoded in the string).
const PASSWORD: &str = "pw-Qx9Vv-1/+";
const PASSWORD_ENCODED: &str = "pw-Qx9Vv-1%2F%2B";
const PROXY_PASSWORD: &str = "proxy-Qx9Vv-2";
const KEY_PASSWORD: &str = "key-Qx9Vv-3";
const SESSION_TOKEN: &str = "token-Qx9Vv-4";

/// Everything written by `tracing` in this process.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .init();
        logs
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails if `text` holds any secret, in any form.
fn assert_clean(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for secret in [MARK, PASSWORD, PASSWORD_ENCODED, "pw-qx9vv-1/+"] {
        assert!(
            !lower.contains(&secret.to_lowercase()),
            "{what} shows a secret: {text}"
        );
    }
}

/// The query options that carry secrets, as a connection string gives them.
fn secret_options() -> String {
    format!(
        "proxyHost=127.0.0.1&proxyPort=1080&proxyUsername=p&proxyPassword={PROXY_PASSWORD}\
         &tls=true&tlsCertificateKeyFile=/nonexistent.pem\
         &tlsCertificateKeyFilePassword={KEY_PASSWORD}\
         &authMechanismProperties=AWS_SESSION_TOKEN:{SESSION_TOKEN},SERVICE_NAME:s"
    )
}

/// `Debug` and `Display` of the error and of each of its sources.
fn error_text(error: &failover::Error) -> String {
    let mut text = format!("{error:?}\n{error}\n");
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(&format!("{s:?}\n{s}\n"));
        source = s.source();
    }
    text
}

/// Starts a member with `options`, which must fail within the connect timeout
/// (plus a margin for a loaded machine); returns everything the error prints.
async fn failed_start(what: &str, options: Options) -> String {
    let options = options
        .collection("secrets")
        .connect_timeout(Duration::from_millis(1500));
    assert_clean(&format!("{what}: the options"), &format!("{options:?}"));
    let started = Instant::now();
    let result = Member::start("secrets", options).await;
    let error = match result {
        Ok(member) => {
            member.abort();
            panic!("{what}: start succeeded; it must fail fast without a usable database")
        }
        Err(error) => error,
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{what}: start took {:?} to fail",
        started.elapsed()
    );
    let text = error_text(&error);
    assert_clean(what, &text);
    text
}

#[tokio::test]
async fn options_print_no_secret() {
    let uri = format!(
        "mongodb://alice:{PASSWORD_ENCODED}@db1.example:27017,db2.example/app?authSource=admin&{}",
        secret_options()
    );
    let options = Options::new().connect_string(uri.clone());
    let debug = format!("{options:?}");
    assert_clean("Options with a connection string", &debug);
    // What is not secret is still there to debug with.
    assert!(
        debug.contains("alice") && debug.contains("db2.example") && debug.contains("authSource"),
        "{debug}"
    );
    assert_clean(
        "Options, pretty-printed",
        &format!("{:#?}", Options::new().connect_string(uri)),
    );

    let mut client_options = ClientOptions::default();
    client_options.hosts = vec![ServerAddress::Tcp {
        host: "db1.example".to_owned(),
        port: Some(27017),
    }];
    let mut credential = Credential::default();
    credential.username = Some("alice".to_owned());
    credential.password = Some(PASSWORD.to_owned());
    credential.mechanism_properties =
        Some(mongodb::bson::doc! { "AWS_SESSION_TOKEN": SESSION_TOKEN });
    client_options.credential = Some(credential);
    let debug = format!("{:?}", Options::new().client_options(client_options));
    assert_clean("Options with driver options", &debug);
    assert!(debug.contains("db1.example:27017"), "{debug}");
}

#[tokio::test]
async fn start_errors_print_no_secret() {
    logs();
    // Malformed: the driver rejects the string, and its reason may quote it.
    for (i, uri) in [
        format!(
            "mongodb://alice:{PASSWORD_ENCODED}@db1:notaport/app?{}",
            secret_options()
        ),
        format!("mongodb://alice:{PASSWORD}@db1/app"), // unescaped `/`
        format!("mongodb://alice:pw-{MARK}%zz@db1/app"), // bad percent-encoding
        format!(
            "mongodb://alice:{PASSWORD_ENCODED}@db1/app?{}",
            secret_options()
        ),
        format!(
            "mongodb://alice:{PASSWORD_ENCODED}@db1/app?authMechanism=MONGODB-AWS\
             &authMechanismProperties=AWS_SESSION_TOKEN:{SESSION_TOKEN}"
        ),
        format!("mongodb://db1/app?proxyHost=h&proxyPassword={PROXY_PASSWORD}"),
        // option names in another case, one twice
        format!("mongodb://alice:{PASSWORD_ENCODED}@db1/app?PROXYPASSWORD={PROXY_PASSWORD}&proxyPassword"),
    ]
    .into_iter()
    .enumerate()
    {
        failed_start(
            &format!("start with malformed connection string #{i}"),
            Options::new().connect_string(uri),
        )
        .await;
    }

    // Unreachable: nothing listens on port 1.
    let unreachable = format!(
        "mongodb://alice:{PASSWORD_ENCODED}@127.0.0.1:1/app?serverSelectionTimeoutMS=300\
         &connectTimeoutMS=300"
    );
    failed_start(
        "start with an unreachable server",
        Options::new().connect_string(unreachable),
    )
    .await;
    // And without the driver's short timeout: our connect timeout gives up first.
    failed_start(
        "start with an unreachable server and the connect timeout",
        Options::new().connect_string(format!(
            "mongodb://alice:{PASSWORD_ENCODED}@127.0.0.1:1/app"
        )),
    )
    .await;

    // A server that refuses the credentials (the test server knows no users).
    let uri = support::mongodb_uri();
    let (scheme, rest) = uri.split_once("://").expect("a connection string");
    let hosts = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let refused = format!("{scheme}://alice:{PASSWORD_ENCODED}@{hosts}");
    failed_start(
        "start with credentials the server refuses",
        Options::new().connect_string(refused.clone()),
    )
    .await;

    // The same, with the credentials in driver options.
    let mut client_options = ClientOptions::parse(&uri).await.unwrap();
    let mut credential = Credential::default();
    credential.username = Some("alice".to_owned());
    credential.password = Some(PASSWORD.to_owned());
    client_options.credential = Some(credential);
    client_options.server_selection_timeout = Some(Duration::from_millis(500));
    failed_start(
        "start with driver options and refused credentials",
        Options::new().client_options(client_options.clone()),
    )
    .await;
    client_options.hosts = vec![ServerAddress::Tcp {
        host: "127.0.0.1".to_owned(),
        port: Some(1),
    }];
    failed_start(
        "start with driver options and an unreachable server",
        Options::new().client_options(client_options),
    )
    .await;

    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert_clean("the logs", &logs);
}
