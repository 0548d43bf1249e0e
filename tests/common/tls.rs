//! Throwaway certificates made at test time (rcgen): a CA, a server certificate for `localhost`
//! and 127.0.0.1 signed by it, a client certificate signed by it, and a second, unrelated CA
//! with its own server certificate for the bad-certificate tests. Written as PEM files into a
//! directory of the test's own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// PEM files of one test's certificates.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA nothing here trusts, and a `localhost` server certificate it signed.
    pub rogue_ca: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Certs {
    /// Makes everything under `dir` (created if missing).
    pub fn new(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let good = ca("netmod test CA");
        let (sc, sk) = leaf(&good, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (cc, ck) = leaf(&good, "test-server", ExtendedKeyUsagePurpose::ClientAuth);
        let rogue = ca("rogue CA");
        let (rc, rk) = leaf(&rogue, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        Certs {
            dir: dir.to_path_buf(),
            ca: write("ca.pem", &good.pem()),
            server_cert: write("server.pem", &sc),
            server_key: write("server.key", &sk),
            client_cert: write("client.pem", &cc),
            client_key: write("client.key", &ck),
            rogue_ca: write("rogue-ca.pem", &rogue.pem()),
            rogue_cert: write("rogue.pem", &rc),
            rogue_key: write("rogue.key", &rk),
        }
    }

    /// Makes them in a fresh temporary directory named after `tag`.
    pub fn temp(tag: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("netmod-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Certs::new(&dir)
    }

    /// The server side: certificate and key, optionally requiring client certificates.
    pub fn server_config(&self, mtls: bool) -> Arc<rustls::ServerConfig> {
        let ca = mtls.then_some(self.ca.as_path());
        shared::tls::server_config(&self.server_cert, &self.server_key, ca).unwrap()
    }

    /// A client trusting the test CA (without a client certificate).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        shared::tls::client_config(Some(&self.ca), None).unwrap()
    }

    /// A client trusting the test CA, presenting the client certificate.
    pub fn client_config_with_cert(&self) -> Arc<rustls::ClientConfig> {
        shared::tls::client_config(Some(&self.ca), Some((&self.client_cert, &self.client_key)))
            .unwrap()
    }

    /// A client that trusts only the rogue CA.
    pub fn rogue_client_config(&self) -> Arc<rustls::ClientConfig> {
        shared::tls::client_config(Some(&self.rogue_ca), None).unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name the test certificates are issued for.
pub fn localhost() -> rustls::pki_types::ServerName<'static> {
    shared::tls::server_name("localhost").unwrap()
}
