//! The demo web app: a Real Service serving a notes page whose notes are encrypted in the
//! browser with a key kept at keyservice.
//!
//! ```sh
//! cargo run -p keyservice-examples --example demo
//! ```
//!
//! Then open the printed address in a browser. It starts keyservice (on a temporary sled
//! store, CORS open to the page's origin only) and the Real Service on loopback ports
//! (8090 and 8091 by default; `--port N` moves them to N and N+1, `--port 0` picks free
//! ones), and runs until Ctrl-C.

use std::process::ExitCode;

use keyservice::Config;
use keyservice::config::{Credential as ServerCredential, Namespace};
use keyservice::server::Server;
use keyservice_client::protocol::Secret;
use keyservice_client::{Client, Credential};
use keyservice_examples::RealService;
use tokio::net::TcpListener;

const NAMESPACE: &str = "notes";

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn port_argument() -> Result<u16, Failure> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(8090),
        (Some("--port"), Some(port)) => Ok(port.parse()?),
        _ => Err("usage: demo [--port N]".into()),
    }
}

async fn run() -> Result<(), Failure> {
    let port = port_argument()?;
    let site = TcpListener::bind(("127.0.0.1", port)).await?;
    // The page is opened as localhost: passkeys (WebAuthn) need a domain, not an address.
    let site_url = format!("http://localhost:{}", site.local_addr()?.port());

    // keyservice: the Real Service's namespace, and CORS for the page's origin only.
    let data = tempfile::tempdir()?;
    let secret = keyservice::new_token()?;
    let mut config = Config::for_data_dir(data.path().join("data"));
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], if port == 0 { 0 } else { port + 1 }));
    config.cors_origins = vec![site_url.clone(), format!("http://{}", site.local_addr()?)];
    config.namespaces.insert(
        NAMESPACE.into(),
        Namespace {
            allow: vec!["127.0.0.1/32".parse()?],
            credentials: vec![ServerCredential { key_id: "notes-1".into(), secret: secret.clone() }],
            connect_budget: keyservice::config::default_connect_budget(),
            oidc: None,
        },
    );
    // Started as the binary starts it; Ctrl-C stops it gracefully.
    let server = Server::new(config).with_signals(None).start().await?;
    let keyservice_url = format!("http://{}", server.addr());

    // The Real Service, serving the page.
    let connector =
        Client::new(&keyservice_url)?.real_service(Credential::new("notes-1", Secret::new(secret.expose())));
    let _site = RealService::serve(site, connector, NAMESPACE, Some(keyservice_url.clone()))?;
    println!("demo: keyservice at {keyservice_url}");
    println!("demo: open {site_url}/ in a browser (Ctrl-C stops)");
    use std::io::Write;
    std::io::stdout().flush()?;
    server.finished().await?;
    Ok(())
}
