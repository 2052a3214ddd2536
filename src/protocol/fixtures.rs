//! Frontend messages as tests write them (the same bytes a driver sends).

/// A frontend message: tag, length, body.
pub fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A simple Query.
pub fn q(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

/// Parse of `sql` as statement `name`, no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

/// Bind of `statement` to the unnamed portal, no parameters.
pub fn bind(statement: &str) -> Vec<u8> {
    msg(b'B', format!("\0{statement}\0\0\0\0\0\0\0").as_bytes())
}

/// Describe of a statement.
pub fn describe(statement: &str) -> Vec<u8> {
    msg(b'D', format!("S{statement}\0").as_bytes())
}

/// Close of a statement.
pub fn close(statement: &str) -> Vec<u8> {
    msg(b'C', format!("S{statement}\0").as_bytes())
}

/// Execute of the unnamed portal, all rows.
pub fn execute() -> Vec<u8> {
    msg(b'E', b"\0\0\0\0\0")
}

/// Sync.
pub fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

/// Flush.
pub fn flush() -> Vec<u8> {
    msg(b'H', b"")
}
