//! auth_hba_file: PostgreSQL's pg_hba.conf syntax, as PgBouncer reads it. Parsed whole when the
//! config is loaded (a bad line is refused with its line number); matched per connection, first
//! matching line wins.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

/// How deep `@file` includes may nest; deeper is taken for a loop.
const MAX_INCLUDE_DEPTH: usize = 10;

/// The method a matching line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    Trust,
    Reject,
    Md5,
    ScramSha256,
    Password,
    Cert,
    Peer,
}

/// What a connection offers to be matched against.
#[derive(Debug, Clone, Copy)]
pub struct HbaRequest<'a> {
    /// None for a Unix-socket connection.
    pub addr: Option<IpAddr>,
    pub tls: bool,
    pub database: &'a str,
    pub user: &'a str,
}

/// The parsed file.
#[derive(Debug, Clone, Default)]
pub struct HbaRules {
    rules: Vec<Rule>,
}

impl HbaRules {
    /// Reads and parses `path`; each error names the file and line.
    pub fn load(path: &Path) -> Result<HbaRules, Vec<String>> {
        let label = path.display().to_string();
        let text = fs::read_to_string(path)
            .map_err(|e| vec![format!("{label}: could not read file: {e}")])?;
        HbaRules::parse(&text, path.parent().unwrap_or(Path::new("")), &label)
    }

    /// Parses file contents; `@file` includes resolve against `base`, and every error reads
    /// `FILE_LABEL:LINE: message`, one per bad line.
    pub fn parse(text: &str, base: &Path, file_label: &str) -> Result<HbaRules, Vec<String>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (line, content) in logical_lines(text) {
            match parse_rule(line, &content, base) {
                Ok(Some(rule)) => rules.push(rule),
                Ok(None) => {}
                Err(message) => errors.push(format!("{file_label}:{line}: {message}")),
            }
        }
        if errors.is_empty() {
            Ok(HbaRules { rules })
        } else {
            Err(errors)
        }
    }

    /// The method of the first line that matches, with its line number; None if none does.
    pub fn find(&self, request: &HbaRequest<'_>) -> Option<(HbaMethod, usize)> {
        self.find_rule(request).map(|m| (m.method, m.line))
    }

    /// What the first line that matches asks for; None if none does.
    pub fn find_rule(&self, request: &HbaRequest<'_>) -> Option<HbaMatch> {
        self.rules
            .iter()
            .find(|rule| rule.matches(request))
            .map(|rule| HbaMatch {
                method: rule.method,
                line: rule.line,
                client_cert: rule.client_cert,
            })
    }
}

/// The line a connection matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HbaMatch {
    pub method: HbaMethod,
    pub line: usize,
    pub client_cert: ClientCert,
}

/// A hostssl line's `clientcert` option: what the client's certificate must prove beside the
/// method (PostgreSQL's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCert {
    #[default]
    NotAsked,
    /// A certificate that chains to client_tls_ca_file.
    VerifyCa,
    /// That, and its common name is the user name.
    VerifyFull,
}

#[derive(Debug, Clone)]
struct Rule {
    line: usize,
    connection: Connection,
    databases: Vec<DatabaseName>,
    users: Vec<UserName>,
    address: Address,
    method: HbaMethod,
    client_cert: ClientCert,
}

impl Rule {
    fn matches(&self, request: &HbaRequest<'_>) -> bool {
        self.connection.admits(request)
            && request.addr.is_none_or(|ip| self.address.contains(ip))
            && self
                .databases
                .iter()
                .any(|name| name.matches(request.database, request.user))
            && self.users.iter().any(|name| name.matches(request.user))
    }
}

/// The first column; `hostnogssenc` is read as `host`, since pgmux never has GSS encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
    HostGssEnc,
}

impl Connection {
    fn parse(text: &str) -> Result<Connection, String> {
        match text {
            "local" => Ok(Connection::Local),
            "host" | "hostnogssenc" => Ok(Connection::Host),
            "hostssl" => Ok(Connection::HostSsl),
            "hostnossl" => Ok(Connection::HostNoSsl),
            "hostgssenc" => Ok(Connection::HostGssEnc),
            _ => Err(format!("invalid connection type \"{text}\"")),
        }
    }

    fn admits(self, request: &HbaRequest<'_>) -> bool {
        match (self, request.addr) {
            (Connection::Local, addr) => addr.is_none(),
            (_, None) => false,
            (Connection::Host, Some(_)) => true,
            (Connection::HostSsl, Some(_)) => request.tls,
            (Connection::HostNoSsl, Some(_)) => !request.tls,
            (Connection::HostGssEnc, Some(_)) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DatabaseName {
    All,
    SameUser,
    /// Only replication connections match it, and pgmux never has one.
    Replication,
    Exact(String),
}

impl DatabaseName {
    fn parse(token: Token) -> Result<DatabaseName, String> {
        refuse_regex(&token)?;
        if token.quoted {
            return Ok(DatabaseName::Exact(token.text));
        }
        match token.text.as_str() {
            "all" => Ok(DatabaseName::All),
            "sameuser" => Ok(DatabaseName::SameUser),
            "replication" => Ok(DatabaseName::Replication),
            "samerole" | "samegroup" => Err(format!(
                "\"{}\" is not supported: pgmux does not know role membership",
                token.text
            )),
            _ => Ok(DatabaseName::Exact(token.text)),
        }
    }

    fn matches(&self, database: &str, user: &str) -> bool {
        match self {
            DatabaseName::All => true,
            DatabaseName::SameUser => database == user,
            DatabaseName::Replication => false,
            DatabaseName::Exact(name) => name == database,
        }
    }
}

#[derive(Debug, Clone)]
enum UserName {
    All,
    Exact(String),
}

impl UserName {
    fn parse(token: Token) -> Result<UserName, String> {
        refuse_regex(&token)?;
        if token.quoted {
            return Ok(UserName::Exact(token.text));
        }
        if token.text == "all" {
            return Ok(UserName::All);
        }
        if token.text.starts_with('+') {
            return Err(format!(
                "\"{}\": +GROUP is not supported: pgmux does not know role membership",
                token.text
            ));
        }
        Ok(UserName::Exact(token.text))
    }

    fn matches(&self, user: &str) -> bool {
        match self {
            UserName::All => true,
            UserName::Exact(name) => name == user,
        }
    }
}

/// PostgreSQL 16 reads a leading `/` as a regular expression (quoted or not); matching it as a
/// plain name would silently change what the line admits.
fn refuse_regex(token: &Token) -> Result<(), String> {
    if token.text.starts_with('/') {
        return Err(format!(
            "\"{}\": regular expressions in database and user names are not supported",
            token.text
        ));
    }
    Ok(())
}

/// A network as address and mask, compared bit by bit, so a mask column need not be contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Address {
    Any,
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Address {
    /// An IPv4 line also admits the IPv4-mapped IPv6 form (::ffff:a.b.c.d) of its addresses,
    /// as PostgreSQL does; an IPv6 line sees the address as it came.
    fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Address::Any, _) => true,
            (Address::V4 { net, mask }, ip) => match ip.to_canonical() {
                IpAddr::V4(ip) => (u32::from(ip) ^ net) & mask == 0,
                IpAddr::V6(_) => false,
            },
            (Address::V6 { net, mask }, IpAddr::V6(ip)) => (u128::from(ip) ^ net) & mask == 0,
            (Address::V6 { .. }, IpAddr::V4(_)) => false,
        }
    }

    fn from_cidr(ip: IpAddr, prefix: &str, text: &str) -> Result<Address, String> {
        let invalid = || format!("invalid CIDR mask in address \"{text}\"");
        let bits: u32 = prefix.parse().map_err(|_| invalid())?;
        match ip {
            IpAddr::V4(ip) if bits <= 32 => Ok(Address::V4 {
                net: u32::from(ip),
                mask: u32::MAX.checked_shl(32 - bits).unwrap_or(0),
            }),
            IpAddr::V6(ip) if bits <= 128 => Ok(Address::V6 {
                net: u128::from(ip),
                mask: u128::MAX.checked_shl(128 - bits).unwrap_or(0),
            }),
            _ => Err(invalid()),
        }
    }

    fn from_mask(ip: IpAddr, mask: IpAddr) -> Result<Address, String> {
        match (ip, mask) {
            (IpAddr::V4(ip), IpAddr::V4(mask)) => Ok(Address::V4 {
                net: u32::from(ip),
                mask: u32::from(mask),
            }),
            (IpAddr::V6(ip), IpAddr::V6(mask)) => Ok(Address::V6 {
                net: u128::from(ip),
                mask: u128::from(mask),
            }),
            _ => Err(format!("IP address {ip} and mask {mask} do not match")),
        }
    }
}

/// One item of a field; a quoted one is a literal name even when it spells a keyword.
#[derive(Debug)]
struct Token {
    text: String,
    quoted: bool,
}

/// The comma-separated items of one whitespace-separated column.
type Field = Vec<Token>;

/// Joins `\`-continued lines (as PostgreSQL 16 does); each keeps its first line's number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, physical) in text.lines().enumerate() {
        let (first, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        match physical.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                pending = Some((first, joined));
            }
            None => {
                joined.push_str(physical);
                lines.push((first, joined));
            }
        }
    }
    lines.extend(pending);
    lines
}

fn split_fields(line: &str) -> Result<Vec<Field>, String> {
    let mut chars = line.chars().peekable();
    let mut fields = Vec::new();
    loop {
        skip_blanks(&mut chars);
        if matches!(chars.peek(), None | Some('#')) {
            return Ok(fields);
        }
        let field = read_field(&mut chars)?;
        if !field.is_empty() {
            fields.push(field);
        }
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn skip_blanks(chars: &mut Chars<'_>) {
    while chars.next_if(|c| matches!(c, ' ' | '\t')).is_some() {}
}

fn read_field(chars: &mut Chars<'_>) -> Result<Field, String> {
    let mut field = Vec::new();
    loop {
        let (token, comma) = read_token(chars)?;
        if token.quoted || !token.text.is_empty() {
            field.push(token);
        }
        if !comma {
            return Ok(field);
        }
        // PostgreSQL tolerates blanks after a comma, so `a, b` is still one list.
        skip_blanks(chars);
    }
}

/// Reads one item; the flag says a comma ended it, so the field goes on.
fn read_token(chars: &mut Chars<'_>) -> Result<(Token, bool), String> {
    let mut text = String::new();
    let mut quoted = false;
    let mut in_quote = false;
    while let Some(&c) = chars.peek() {
        if !in_quote && matches!(c, ' ' | '\t' | '#') {
            break;
        }
        chars.next();
        match c {
            '"' if in_quote && chars.next_if_eq(&'"').is_some() => text.push('"'),
            '"' => {
                in_quote = !in_quote;
                quoted = true;
            }
            ',' if !in_quote => return Ok((Token { text, quoted }, true)),
            _ => text.push(c),
        }
    }
    if in_quote {
        return Err("unterminated quoted string".into());
    }
    Ok((Token { text, quoted }, false))
}

/// Replaces each unquoted `@file` item by the names that file holds; nested includes resolve
/// against the directory of the file that names them, as in PostgreSQL.
fn expand_includes(field: Field, dir: &Path, depth: usize) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    for token in field {
        match include_name(&token) {
            Some(name) => tokens.extend(read_include(name, dir, depth)?),
            None => tokens.push(token),
        }
    }
    Ok(tokens)
}

fn include_name(token: &Token) -> Option<&str> {
    if token.quoted {
        return None;
    }
    token.text.strip_prefix('@').filter(|name| !name.is_empty())
}

fn read_include(name: &str, dir: &Path, depth: usize) -> Result<Vec<Token>, String> {
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(format!(
            "@{name}: includes nest deeper than {MAX_INCLUDE_DEPTH} levels"
        ));
    }
    let path = dir.join(name);
    let shown = path.display();
    let text = fs::read_to_string(&path)
        .map_err(|e| format!("could not read included file \"{shown}\": {e}"))?;
    let nested_dir = path.parent().unwrap_or(dir);
    let mut tokens = Vec::new();
    for (line, content) in logical_lines(&text) {
        let fields = split_fields(&content).map_err(|e| format!("{shown}:{line}: {e}"))?;
        for field in fields {
            tokens.extend(expand_includes(field, nested_dir, depth + 1)?);
        }
    }
    Ok(tokens)
}

/// Parses one logical line; None for a blank or comment-only line.
fn parse_rule(line: usize, content: &str, base: &Path) -> Result<Option<Rule>, String> {
    let mut fields = split_fields(content)?.into_iter();
    let Some(first) = fields.next() else {
        return Ok(None);
    };
    let connection = Connection::parse(&single(first, "connection type")?.text)?;
    let databases = expand_includes(required(fields.next(), "database")?, base, 0)?
        .into_iter()
        .map(DatabaseName::parse)
        .collect::<Result<_, _>>()?;
    let users = expand_includes(required(fields.next(), "role")?, base, 0)?
        .into_iter()
        .map(UserName::parse)
        .collect::<Result<_, _>>()?;
    let address = match connection {
        Connection::Local => Address::Any,
        _ => parse_address(&mut fields)?,
    };
    let method_token = single(required(fields.next(), "authentication method")?, "method")?;
    let method = parse_method(&method_token.text, connection)?;
    let client_cert = check_options(fields.flatten(), connection, method)?;
    Ok(Some(Rule {
        line,
        connection,
        databases,
        users,
        address,
        method,
        client_cert,
    }))
}

fn required(field: Option<Field>, what: &str) -> Result<Field, String> {
    field.ok_or_else(|| format!("end of line before {what}"))
}

fn single(mut field: Field, what: &str) -> Result<Token, String> {
    match field.pop() {
        Some(token) if field.is_empty() => Ok(token),
        _ => Err(format!("multiple values specified for {what}")),
    }
}

/// Reads the address column, and the mask column after a bare IP address.
fn parse_address(fields: &mut impl Iterator<Item = Field>) -> Result<Address, String> {
    let token = single(required(fields.next(), "IP address")?, "IP address")?;
    let text = token.text.as_str();
    if !token.quoted {
        match text {
            "all" => return Ok(Address::Any),
            "samehost" | "samenet" => {
                return Err(format!(
                    "\"{text}\" is not supported: give the network in CIDR notation"
                ))
            }
            _ => {}
        }
    }
    if let Some((ip, prefix)) = text.split_once('/') {
        let ip = ip
            .parse()
            .map_err(|_| format!("invalid IP address \"{text}\""))?;
        return Address::from_cidr(ip, prefix, text);
    }
    let Ok(ip) = text.parse::<IpAddr>() else {
        return Err(format!(
            "host names are not supported (\"{text}\"): give an IP address in CIDR notation"
        ));
    };
    let mask_token = single(required(fields.next(), "IP mask")?, "IP mask")?;
    let mask = mask_token.text.parse().map_err(|_| {
        format!(
            "invalid IP mask \"{}\": write the address as {text}/BITS or follow it with a mask",
            mask_token.text
        )
    })?;
    Address::from_mask(ip, mask)
}

fn parse_method(text: &str, connection: Connection) -> Result<HbaMethod, String> {
    let method = match text {
        "trust" => HbaMethod::Trust,
        "reject" => HbaMethod::Reject,
        "md5" => HbaMethod::Md5,
        "scram-sha-256" => HbaMethod::ScramSha256,
        "password" => HbaMethod::Password,
        "cert" => HbaMethod::Cert,
        "peer" => HbaMethod::Peer,
        "ident" | "gss" | "sspi" | "ldap" | "radius" | "pam" | "bsd" => {
            return Err(format!("authentication method \"{text}\" is not supported"))
        }
        _ => return Err(format!("invalid authentication method \"{text}\"")),
    };
    if method == HbaMethod::Peer && connection != Connection::Local {
        return Err("peer authentication is only supported on local sockets".into());
    }
    if method == HbaMethod::Cert && connection != Connection::HostSsl {
        return Err("cert authentication is only supported on hostssl connections".into());
    }
    Ok(method)
}

fn check_options(
    options: impl Iterator<Item = Token>,
    connection: Connection,
    method: HbaMethod,
) -> Result<ClientCert, String> {
    let mut client_cert = ClientCert::NotAsked;
    for option in options {
        let Some((name, value)) = option.text.split_once('=') else {
            return Err(format!(
                "authentication option not in name=value format: \"{}\"",
                option.text
            ));
        };
        match name {
            "map" => {
                return Err("option \"map\" is not supported: pgmux has no auth_ident_file".into())
            }
            "clientcert" => client_cert = check_clientcert(value, connection, method)?,
            _ => return Err(format!("authentication option \"{name}\" is not supported")),
        }
    }
    Ok(client_cert)
}

/// PostgreSQL's rules for where `clientcert` may appear; the session enforces it.
fn check_clientcert(
    value: &str,
    connection: Connection,
    method: HbaMethod,
) -> Result<ClientCert, String> {
    if connection != Connection::HostSsl {
        return Err("clientcert can only be configured on hostssl lines".into());
    }
    match value {
        "verify-ca" if method == HbaMethod::Cert => {
            Err("clientcert only accepts verify-full when using cert authentication".into())
        }
        "verify-ca" => Ok(ClientCert::VerifyCa),
        "verify-full" => Ok(ClientCert::VerifyFull),
        _ => Err(format!("invalid value for clientcert: \"{value}\"")),
    }
}

#[cfg(test)]
mod tests;
