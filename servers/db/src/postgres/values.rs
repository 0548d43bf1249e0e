//! Values between the frame protocol and libpq: parameters out, typed text results in
//! (`bytea` hex, integers, reals, booleans), WAL positions.

use super::*;

pub(super) fn param(v: Option<&Value>) -> Param<'_> {
    match v.and_then(|v| v.kind.as_ref()) {
        None | Some(value::Kind::Null(_)) => Param::Null,
        Some(value::Kind::Integer(i)) => Param::Int(*i),
        Some(value::Kind::Real(f)) => Param::Real(*f),
        Some(value::Kind::Text(t)) => Param::Text(t),
        Some(value::Kind::Blob(b)) => Param::Blob(b),
    }
}

pub(super) fn hex_value(h: u8) -> Option<u8> {
    match h {
        b'0'..=b'9' => Some(h - b'0'),
        b'a'..=b'f' => Some(h - b'a' + 10),
        b'A'..=b'F' => Some(h - b'A' + 10),
        _ => None,
    }
}

/// `bytea` in the text format (`\x` and hex digits).
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    let hex = text.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| Some(hex_value(p[0])? << 4 | hex_value(p[1])?))
        .collect()
}

pub(super) fn to_value(ty: libpq::Oid, text: Option<&[u8]>) -> (Value, usize) {
    let Some(t) = text else {
        return (Value::null(), 2);
    };
    let s = || String::from_utf8_lossy(t);
    let kind = match ty {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => s().parse().ok().map(value::Kind::Integer),
        oid::FLOAT4 | oid::FLOAT8 => s().parse().ok().map(value::Kind::Real),
        oid::BOOL => Some(value::Kind::Integer(i64::from(t == b"t"))),
        oid::BYTEA => unhex(t).map(|b| value::Kind::Blob(b.into())),
        _ => None,
    }
    .unwrap_or_else(|| value::Kind::Text(s().into_owned()));
    let size = match &kind {
        value::Kind::Text(x) => x.len() + 6,
        value::Kind::Blob(b) => b.len() + 6,
        _ => 10,
    };
    (Value { kind: Some(kind) }, size)
}

pub(super) fn columns(res: &PgResult) -> Vec<Column> {
    (0..res.columns())
        .map(|c| Column {
            name: res.column_name(c),
            decltype: libpq::type_name(res.column_type(c)).to_string(),
        })
        .collect()
}

pub(super) fn rows_of(res: &PgResult, types: &[libpq::Oid]) -> std::vec::IntoIter<SizedRow> {
    (0..res.rows())
        .map(|r| {
            let mut size = 0;
            let values = types
                .iter()
                .enumerate()
                .map(|(c, ty)| {
                    let (v, n) = to_value(*ty, res.value(r, c));
                    size += n;
                    v
                })
                .collect();
            (Row { values }, size)
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// A WAL position (`16/B374D848`) as a number.
pub fn parse_lsn(text: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(text).ok()?;
    let (hi, lo) = s.split_once('/')?;
    Some(u64::from_str_radix(hi, 16).ok()? << 32 | u64::from_str_radix(lo, 16).ok()?)
}
