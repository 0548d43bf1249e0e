//! Unit tests of `libpq`.

use super::conn_params;

fn get<'a>(params: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn the_client_login_replaces_the_urls_user_and_never_sends_its_password() {
    let url = "postgresql://netmod:db%20secret@10.0.0.5:5433/app?connect_timeout=9";
    let p = conn_params(
        url,
        &[("connect_timeout", "5"), ("keepalives", "1")],
        &[("user", "netmod_client"), ("password", "")],
    )
    .unwrap();
    assert_eq!(get(&p, "user"), ["netmod_client"]);
    assert!(get(&p, "password").is_empty(), "{p:?}");
    assert_eq!(get(&p, "host"), ["10.0.0.5"]);
    assert_eq!(get(&p, "port"), ["5433"]);
    assert_eq!(get(&p, "dbname"), ["app"]);
    // The URL's own setting comes after the default, so it wins.
    assert_eq!(get(&p, "connect_timeout"), ["5", "9"]);
    let with = conn_params(url, &[], &[("password", " client secret ")]).unwrap();
    assert_eq!(get(&with, "password"), [" client secret "]);
    assert_eq!(get(&with, "user"), ["netmod"]);
    assert!(conn_params("postgresql://h/db?nonsense=1", &[], &[]).is_err());
}
