//! auth_query on a server connection: one parameterised query through the extended protocol,
//! so the user name travels as a bind parameter and is never spliced into SQL.

use super::{ServerConn, ServerError};
use crate::protocol::backend::parse_error_fields;
use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

impl ServerConn {
    /// Runs `sql` with `$1` = `param` and returns the first row's first two columns (NULL as
    /// None), or None when there is no row. The connection must be idle and logged in.
    pub async fn query_pair(
        &mut self,
        sql: &str,
        param: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>, ServerError> {
        let mut out = BytesMut::new();
        let malformed = |_| ServerError::Unexpected('?');
        frontend::parse("", sql, [0u32], &mut out).map_err(malformed)?;
        frontend::bind(
            "",
            "",
            [0i16],
            [param],
            |value, buf| {
                buf.extend_from_slice(value.as_bytes());
                Ok(IsNull::No)
            },
            [0i16],
            &mut out,
        )
        .map_err(|_| ServerError::Unexpected('?'))?;
        frontend::execute("", 1, &mut out).map_err(malformed)?;
        frontend::sync(&mut out);
        self.send(&out).await?;
        let mut row = None;
        let mut failure = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'D' if row.is_none() => row = Some(first_two_columns(body)?),
                b'E' => failure = Some(parse_error_fields(&body)),
                b'Z' => {
                    return match failure {
                        Some(f) => Err(ServerError::Refused(f)),
                        None => Ok(row),
                    }
                }
                _ => {}
            }
        }
    }
}

/// The first two columns of a DataRow, as text.
fn first_two_columns(
    mut body: bytes::Bytes,
) -> Result<(Option<String>, Option<String>), ServerError> {
    let bad = || ServerError::Unexpected('D');
    if body.len() < 2 || body.get_i16() < 2 {
        return Err(bad());
    }
    let mut column = || -> Result<Option<String>, ServerError> {
        if body.len() < 4 {
            return Err(bad());
        }
        let len = body.get_i32();
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        if body.len() < len {
            return Err(bad());
        }
        let value = body.split_to(len);
        Ok(Some(String::from_utf8_lossy(&value).into_owned()))
    };
    Ok((column()?, column()?))
}
