//! wss, proxies, redirects, cookies and timeouts against real components the tests start:
//! nginx terminating TLS in front of the Python `websockets` server (certificates made by each
//! run), tinyproxy (HTTP CONNECT) and microsocks (SOCKS5). Debian packages; `scripts/test`
//! installs them.
#![cfg(all(feature = "rustls", feature = "proxy"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use wsc::{Client, CloseReason, Error, Message, Proxy, Roots, TimeoutKind};

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: run scripts/test, which installs nginx-light, tinyproxy and microsocks"
    );
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wsc-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    server: (String, String),
    expired: (String, String),
    foreign: (String, String),
    client: (String, String),
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    (Issuer::new(p, key), pem)
}

fn leaf(issuer: &Issuer<'_, KeyPair>, names: &[&str], expired: bool) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    if expired {
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    }
    let key = KeyPair::generate().unwrap();
    (
        p.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn pki() -> Pki {
    let (ca_issuer, ca_pem) = ca("wsc test CA");
    let (other, other_ca_pem) = ca("someone else's CA");
    Pki {
        server: leaf(&ca_issuer, &["localhost"], false),
        expired: leaf(&ca_issuer, &["localhost"], true),
        foreign: leaf(&other, &["localhost"], false),
        client: leaf(&ca_issuer, &["wsc client"], false),
        ca_pem,
        other_ca_pem,
    }
}

/// nginx terminating TLS in front of a backend, on four ports: good, expired, foreign CA, mTLS.
struct Nginx {
    _proc: Proc,
    good: u16,
    expired: u16,
    foreign: u16,
    mtls: u16,
}

fn nginx(pki: &Pki, backend: u16) -> Nginx {
    let dir = scratch("nginx");
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let (good, expired, foreign, mtls) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let server = |port: u16, cert: &(String, String), name: &str, extra: &str| {
        let c = write(&format!("{name}.crt"), &cert.0);
        let k = write(&format!("{name}.key"), &cert.1);
        format!(
            "server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {c}; ssl_certificate_key {k}; {extra}
               location / {{ proxy_pass http://127.0.0.1:{backend}; proxy_http_version 1.1;
                 proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\";
                 proxy_set_header Cookie $http_cookie; proxy_read_timeout 60s; }} }}\n"
        )
    };
    let ca = write("ca.crt", &pki.ca_pem);
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; user root; worker_processes 1; error_log {d}/error.log warn; pid {d}/nginx.pid;
         events {{ worker_connections 64; }}
         http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
         {}{}{}{} }}",
        server(good, &pki.server, "good", ""),
        server(expired, &pki.expired, "expired", ""),
        server(foreign, &pki.foreign, "foreign", ""),
        server(mtls, &pki.server, "mtls", &format!("ssl_client_certificate {ca}; ssl_verify_client on;")),
    );
    let conf_path = write("nginx.conf", &conf);
    let child = Command::new(tool("nginx"))
        .args(["-p", &d.to_string(), "-c", &conf_path])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    for p in [good, expired, foreign, mtls] {
        wait_port(p);
    }
    Nginx {
        _proc: proc,
        good,
        expired,
        foreign,
        mtls,
    }
}

fn trusting(pki: &Pki) -> wsc::ClientBuilder {
    Client::builder()
        .tls_roots(Roots::None)
        .add_root_certificates_pem(pki.ca_pem.as_bytes())
}

async fn echo_once(client: &Client, url: &str) -> Result<(), Error> {
    let mut s = client.connect(url).await?;
    s.send("over TLS").await?;
    assert_eq!(s.recv().await.unwrap()?, Message::text("over TLS"));
    s.close(CloseReason::normal()).await?;
    Ok(())
}

/// A refused certificate as shown (`Display`) and as rustls reported it, which stays the
/// error's source.
fn tls_failure(r: Result<(), Error>) -> (String, rustls::CertificateError) {
    let e = match r {
        Err(e @ Error::Tls { .. }) => e,
        other => panic!("expected a TLS error, got {other:?}"),
    };
    let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<rustls::Error>());
    let Some(rustls::Error::InvalidCertificate(c)) = source else {
        panic!("expected rustls's certificate error as the source, got {e:?}");
    };
    assert!(
        e.chain()
            .to_string()
            .ends_with(&source.unwrap().to_string())
    );
    (e.to_string(), c.clone())
}

#[tokio::test]
async fn wss_through_nginx_verifies_certificates() {
    let backend = common::python_server(&[]);
    let pki = pki();
    let n = nginx(&pki, backend.port);
    let client = trusting(&pki).build().unwrap();
    // A good chain, by name (localhost resolves to ::1 and 127.0.0.1; only the latter listens).
    echo_once(&client, &format!("wss://localhost:{}/", n.good))
        .await
        .unwrap();
    // The wrong name: the certificate is for localhost, not 127.0.0.1.
    use rustls::CertificateError as C;
    let (shown, c) = tls_failure(echo_once(&client, &format!("wss://127.0.0.1:{}/", n.good)).await);
    assert_eq!(
        shown,
        "TLS with 127.0.0.1 failed: the certificate is not valid for this host name"
    );
    assert!(matches!(
        c,
        C::NotValidForName | C::NotValidForNameContext { .. }
    ));
    // Expired.
    let (shown, c) =
        tls_failure(echo_once(&client, &format!("wss://localhost:{}/", n.expired)).await);
    assert_eq!(
        shown,
        "TLS with localhost failed: the certificate is expired"
    );
    assert!(matches!(c, C::Expired | C::ExpiredContext { .. }));
    // An unknown CA.
    let (shown, c) =
        tls_failure(echo_once(&client, &format!("wss://localhost:{}/", n.foreign)).await);
    assert_eq!(
        shown,
        "TLS with localhost failed: the certificate is signed by an unknown authority"
    );
    assert_eq!(c, C::UnknownIssuer);
    // Trusting that CA too fixes it; so does the loudly named opt-out.
    let both = trusting(&pki)
        .add_root_certificates_pem(pki.other_ca_pem.as_bytes())
        .build()
        .unwrap();
    echo_once(&both, &format!("wss://localhost:{}/", n.foreign))
        .await
        .unwrap();
    let reckless = Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    echo_once(&reckless, &format!("wss://127.0.0.1:{}/", n.expired))
        .await
        .unwrap();
    // The platform's roots do not know our CA.
    let platform = Client::builder().build().unwrap();
    assert!(matches!(
        echo_once(&platform, &format!("wss://localhost:{}/", n.good)).await,
        Err(Error::Tls { .. })
    ));
}

#[tokio::test]
async fn mutual_tls_with_and_without_a_client_certificate() {
    let backend = common::python_server(&[]);
    let pki = pki();
    let n = nginx(&pki, backend.port);
    let url = format!("wss://localhost:{}/", n.mtls);
    let with = trusting(&pki)
        .client_certificate_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes())
        .build()
        .unwrap();
    echo_once(&with, &url).await.unwrap();
    let without = trusting(&pki).build().unwrap();
    match echo_once(&without, &url).await {
        // nginx answers a missing client certificate with 400.
        Err(Error::HandshakeRefused { status, body, .. }) => {
            assert_eq!(status, 400);
            assert!(
                String::from_utf8_lossy(&body).contains("certificate"),
                "{body:?}"
            );
        }
        Err(Error::Tls { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn tinyproxy(auth: Option<(&str, &str)>) -> (Proc, u16) {
    let dir = scratch("tinyproxy");
    let port = common::free_port();
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Warning\nMaxClients 20\nAllow 127.0.0.1\n"
    );
    if let Some((u, p)) = auth {
        conf.push_str(&format!("BasicAuth {u} {p}\n"));
    }
    let path = dir.join("tinyproxy.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(tool("tinyproxy"))
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_port(port);
    (p, port)
}

fn microsocks(auth: Option<(&str, &str)>) -> (Proc, u16) {
    let port = common::free_port();
    let mut cmd = Command::new(tool("microsocks"));
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((u, p)) = auth {
        cmd.args(["-u", u, "-P", p]);
    }
    let p = Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    (p, port)
}

#[tokio::test]
async fn http_connect_proxy_with_and_without_auth() {
    let backend = common::python_server(&[]);
    let pki = pki();
    let n = nginx(&pki, backend.port);
    let wss = format!("wss://localhost:{}/", n.good);
    let ws = backend.url("/");

    let (_open, open_port) = tinyproxy(None);
    let via = trusting(&pki)
        .proxy(Proxy::parse(&format!("http://127.0.0.1:{open_port}")).unwrap())
        .build()
        .unwrap();
    echo_once(&via, &wss).await.unwrap();
    echo_once(&via, &ws).await.unwrap();

    let (_auth, auth_port) = tinyproxy(Some(("alice", "s3cret")));
    let good = trusting(&pki)
        .proxy(Proxy::parse(&format!("http://alice:s3cret@127.0.0.1:{auth_port}")).unwrap())
        .build()
        .unwrap();
    echo_once(&good, &wss).await.unwrap();
    let bad = trusting(&pki)
        .proxy(Proxy::parse(&format!("http://alice:wrong@127.0.0.1:{auth_port}")).unwrap())
        .build()
        .unwrap();
    match echo_once(&bad, &wss).await {
        // tinyproxy answers a failed CONNECT authentication with 401 rather than 407.
        Err(Error::Proxy {
            status: Some(401 | 407),
            reason,
        }) => assert!(!reason.is_empty()),
        other => panic!("expected the proxy's refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn socks5_proxy_with_auth_and_remote_dns() {
    let backend = common::python_server(&[]);
    let pki = pki();
    let n = nginx(&pki, backend.port);
    let (_s, port) = microsocks(Some(("bob", "pw")));
    // socks5h: "localhost" is resolved by the proxy.
    let client = trusting(&pki)
        .proxy(Proxy::parse(&format!("socks5h://bob:pw@127.0.0.1:{port}")).unwrap())
        .build()
        .unwrap();
    echo_once(&client, &format!("wss://localhost:{}/", n.good))
        .await
        .unwrap();
    echo_once(&client, &backend.url("/")).await.unwrap();
    let local_dns = trusting(&pki)
        .proxy(Proxy::parse(&format!("socks5://bob:pw@127.0.0.1:{port}")).unwrap())
        .build()
        .unwrap();
    echo_once(&local_dns, &backend.url("/")).await.unwrap();
    let wrong = Client::builder()
        .proxy(Proxy::parse(&format!("socks5h://bob:nope@127.0.0.1:{port}")).unwrap())
        .build()
        .unwrap();
    assert!(matches!(
        echo_once(&wrong, &backend.url("/")).await,
        Err(Error::Proxy { .. }) | Err(Error::Io { .. })
    ));
}

#[tokio::test]
async fn proxies_from_the_environment() {
    let backend = common::python_server(&[]);
    let (_p, port) = tinyproxy(Some(("env", "pw")));
    // The same rules as `proxy_from_env`, over a variable table the test owns (changing the
    // process environment under other test threads would be a data race).
    let url = backend.url("/whoami");
    let from_env = |vars: &[(&str, &str)]| {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Client::builder()
            .proxy_from_env_with(move |k| map.get(k).cloned())
            .build()
            .unwrap()
    };
    // HTTP_PROXY applies to ws://; a wrong password shows the proxy is really in the path.
    let c = from_env(&[("HTTP_PROXY", &format!("http://env:bad@127.0.0.1:{port}"))]);
    assert!(matches!(
        c.connect(&url).await,
        Err(Error::Proxy {
            status: Some(401 | 407),
            ..
        })
    ));
    let c = from_env(&[("http_proxy", &format!("http://env:pw@127.0.0.1:{port}"))]);
    c.connect(&url)
        .await
        .unwrap()
        .close(CloseReason::normal())
        .await
        .unwrap();
    // NO_PROXY wins.
    let c = from_env(&[
        ("HTTP_PROXY", &format!("http://env:bad@127.0.0.1:{port}")),
        ("NO_PROXY", "127.0.0.1"),
    ]);
    c.connect(&url)
        .await
        .unwrap()
        .close(CloseReason::normal())
        .await
        .unwrap();
}

#[cfg(feature = "cookies")]
#[tokio::test]
async fn redirects_and_cookies() {
    let backend = common::python_server(&[]);
    let client = Client::builder().cookies(true).build().unwrap();
    // A redirect that sets a cookie, to an endpoint that sets another.
    let s = client
        .request(backend.url("/redirect"))
        .origin("https://app.example")
        .connect()
        .await
        .unwrap();
    assert_eq!(s.call().url().path(), "/set-cookie");
    s.close(CloseReason::normal()).await.unwrap();
    // Both cookies come back on the next handshake of this client.
    let mut s = client
        .request(backend.url("/whoami"))
        .origin("https://app.example")
        .connect()
        .await
        .unwrap();
    let who = s.recv().await.unwrap().unwrap();
    let who = who.as_text().unwrap();
    assert!(
        who.contains("hop=1") && who.contains("session=s3cr3t"),
        "{who}"
    );
    assert!(who.contains("origin=https://app.example"), "{who}");
    s.close(CloseReason::normal()).await.unwrap();
    // A client without a jar sends none.
    let mut s = Client::new().connect(backend.url("/whoami")).await.unwrap();
    assert_eq!(
        s.recv().await.unwrap().unwrap().as_text().unwrap(),
        "cookie=;origin="
    );
    // http:// Locations map to ws://; loops are bounded; following can be turned off.
    let to = format!("http://127.0.0.1:{}/whoami", backend.port);
    let s = Client::new()
        .connect(format!("{}?to={}", backend.url("/redirect"), to))
        .await
        .unwrap();
    assert_eq!(s.call().url().scheme(), "ws");
    assert!(matches!(
        Client::new().connect(backend.url("/loop")).await,
        Err(Error::Redirect(_))
    ));
    let no = Client::builder().max_redirects(0).build().unwrap();
    assert!(
        matches!(no.connect(backend.url("/redirect")).await, Err(Error::HandshakeRefused { status, .. }) if status == 302)
    );
}

#[tokio::test]
async fn connect_timeout_on_a_full_backlog() {
    // A listener with a backlog of 1 that never accepts: once its queue is full, further SYNs
    // are dropped and the connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let client = Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = client.connect(format!("ws://{addr}/")).await;
    let took = start.elapsed();
    assert!(
        matches!(r, Err(Error::Timeout(TimeoutKind::Connect))),
        "{r:?}"
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    drop(listener);
}

/// Terminates TLS on a free port and forwards the bytes to `to`: an HTTPS front for tinyproxy.
async fn tls_front(pki: &Pki, to: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.server.0.as_bytes())
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await
                    && let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn https_proxy_carries_wss() {
    let backend = common::python_server(&[]);
    let pki = pki();
    let n = nginx(&pki, backend.port);
    let (_p, proxy_port) = tinyproxy(Some(("carol", "pw")));
    let front = tls_front(&pki, proxy_port).await;
    // TLS to the proxy (verified with the same CA), CONNECT inside it, then TLS to the server.
    let client = trusting(&pki)
        .proxy(Proxy::parse(&format!("https://carol:pw@localhost:{front}")).unwrap())
        .build()
        .unwrap();
    echo_once(&client, &format!("wss://localhost:{}/", n.good))
        .await
        .unwrap();
    echo_once(&client, &backend.url("/")).await.unwrap();
}
