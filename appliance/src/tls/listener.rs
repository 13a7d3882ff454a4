//! The HTTPS listener: TLS with certificates from the device CA (`.local`)
//! or the ACME CA (public names, see `crate::domain`), then the
//! same router as plain HTTP, with the peer marked as TLS (cookies get
//! `Secure`).

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::web::peer::Peer;

/// Accepts TLS connections on `listener` until `stop` turns true. Clients
/// at `home` get every name's certificate (`names`); clients on the
/// internet only the public names' (`public_names`).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    names: Arc<dyn rustls::server::ResolvesServerCert>,
    public_names: Arc<dyn rustls::server::ResolvesServerCert>,
    home: crate::web::peer::HomeNetworks,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor_for = |resolver: Arc<dyn rustls::server::ResolvesServerCert>| {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    };
    let (home_acceptor, internet_acceptor) = (acceptor_for(names), acceptor_for(public_names));
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "TLS accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let acceptor = if home.contains(addr.ip()) {
            home_acceptor.clone()
        } else {
            internet_acceptor.clone()
        };
        let peer = Peer::Remote {
            ip: addr.ip().to_canonical(),
            tls: true,
        };
        let service = TowerToHyperService::new(app.clone().layer(Extension(peer)));
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(%err, client = %addr, "TLS handshake failed");
                    return;
                }
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%err, client = %addr, "TLS connection ended");
            }
        });
    }
}
