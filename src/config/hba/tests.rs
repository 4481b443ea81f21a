use super::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn rules(text: &str) -> HbaRules {
    HbaRules::parse(text, Path::new("."), "hba.conf").expect("valid file")
}

fn errors(text: &str) -> Vec<String> {
    HbaRules::parse(text, Path::new("."), "hba.conf").expect_err("invalid file")
}

/// Cases split by `;` or newlines: `[tls] local|ADDRESS DATABASE USER => Method:LINE|none`.
fn check(rules: &HbaRules, cases: &str) {
    let cases = cases.split(['\n', ';']).map(str::trim);
    for case in cases.filter(|case| !case.is_empty()) {
        let (who, answer) = case.split_once(" => ").expect("case has =>");
        let words: Vec<&str> = who.split(' ').collect();
        let (tls, words) = match words.split_first() {
            Some((&"tls", rest)) => (true, rest),
            _ => (false, &words[..]),
        };
        let [addr, database, user] = words else {
            panic!("bad case {case}")
        };
        let addr = (*addr != "local").then(|| addr.parse().expect("test address"));
        let found = rules.find(&HbaRequest {
            addr,
            tls,
            database,
            user,
        });
        let shown = found.map_or("none".into(), |(m, line)| format!("{m:?}:{line}"));
        assert_eq!(shown, answer, "{who}");
    }
}

/// A directory of its own under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("pgmux-hba-test-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        fs::create_dir_all(dir.join("sub")).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn connection_types_and_methods() {
    let text = "local all all trust\nhostssl all all all cert\nhostnossl all all all md5\n\
                hostgssenc all all all reject\nhostnogssenc all all all password\n\
                host all all all scram-sha-256\n";
    check(
        &rules(text),
        "local d u => Trust:1\n tls ::1 d u => Cert:2\n 1.2.3.4 d u => Md5:3",
    );
    let text = text.replace("hostnossl", "hostssl");
    check(&rules(&text), "::1 d u => Password:5");
    let text = "hostgssenc all all all trust\nhost all all all reject\nlocal all all peer";
    check(
        &rules(text),
        "tls ::1 d u => Reject:2\n ::1 d u => Reject:2\n local d u => Peer:3",
    );
    check(
        &rules("host all all all scram-sha-256"),
        "10.0.0.1 d u => ScramSha256:1",
    );
    check(&rules("host all all all md5"), "local d u => none");
}

#[test]
fn names_keywords_lists_and_quoting() {
    let text = "local sameuser all trust\nlocal replication all reject\n\
                local \"all\",\"sameuser\",\"replication\" all md5\nlocal sales,hr all password\n\
                local all \"all\",\"+x\",sameuser,\"@f\" md5\nlocal all alice, bob password\n\
                local \"my db\",\"a\"\"b\" \"x#y\" trust # why\nlocal all,\\\nx \\\nall reject#c\n";
    check(
        &rules(text),
        "local u u => Trust:1; local all x => Md5:3; local sameuser x => Md5:3
         local replication x => Md5:3; local hr x => Password:4; local HR all => Md5:5
         local d +x => Md5:5; local d sameuser => Md5:5; local d @f => Md5:5
         local d bob => Password:6; local d Bob => Reject:8; local d x#y => Reject:8",
    );
    let text = text.replace("local all,", "local x,");
    check(
        &rules(&text),
        "local a\"b x#y => Trust:7\n local d x#y => none",
    );
    let quoted_empty = rules("local \"\" all trust").rules;
    assert_eq!(
        quoted_empty[0].databases,
        [DatabaseName::Exact(String::new())]
    );
    check(
        &rules("\n# comments only\n \t\n"),
        "local d u => none\n ::1 d u => none",
    );
}

#[test]
fn addresses_masks_and_families() {
    let text = "host all a 10.0.0.0/8 trust\nhost all b 192.168.1.7 255.255.255.255 md5\n\
                host all c 0.0.0.0/0 trust\nhost all d fd00::/8 trust\n\
                host all e ::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff trust\n\
                host all f 1.2.3.4/32 trust\nhost all g 10.0.0.0 255.0.255.0 trust\n\
                host all h ::ffff:0:0/96 trust\nhost all all all reject";
    check(
        &rules(text),
        "10.200.3.4 d a => Trust:1; 11.0.0.1 d a => Reject:9; 192.168.1.7 d b => Md5:2
         192.168.1.8 d b => Reject:9; 203.0.113.9 d c => Trust:3; ::1 d c => Reject:9
         fdab::1 d d => Trust:4; 10.0.0.1 d d => Reject:9; ::1 d e => Trust:5
         ::2 d e => Reject:9; ::ffff:10.1.2.3 d a => Trust:1; ::ffff:1.2.3.5 d f => Reject:9
         1.2.3.4 d f => Trust:6; 2001:db8::1 d x => Reject:9; 10.9.0.7 d g => Trust:7
         10.9.1.7 d g => Reject:9; ::ffff:1.2.3.4 d h => Trust:8; 1.2.3.4 d h => Reject:9",
    );
}

#[test]
fn first_match_wins() {
    let text = "host all evil all reject\nhost all all 10.0.0.0/8 md5\nhost all all all trust";
    check(
        &rules(text),
        "10.0.0.1 d evil => Reject:1; 10.0.0.1 d u => Md5:2; 8.8.8.8 d u => Trust:3
         local d u => none",
    );
}

#[test]
fn includes() {
    let dir = TempDir::new();
    dir.write("users", "alice, bob # the team\n\"all\"\n@sub/more\n");
    dir.write("sub/more", "carol\n@deeper\n");
    dir.write("sub/deeper", "dave,erin");
    dir.write("dbs", "sales\nall\n");
    dir.write("loop", "@loop\n");
    dir.write("broken", "ok\n\"unclosed\n");
    dir.write("empty", "# nobody yet\n");
    let text = "local all @users md5\nlocal \"@users\" all trust\nlocal all @empty reject\n\
                local @dbs x peer\n";
    let rules = HbaRules::parse(text, &dir.0, "f").expect("valid");
    for user in ["alice", "bob", "all", "carol", "dave", "erin"] {
        check(&rules, &format!("local d {user} => Md5:1"));
    }
    check(
        &rules,
        "local @users z => Trust:2\n local any x => Peer:4\n local d nobody => none",
    );

    let bad = "local all @missing md5\nlocal all @loop md5\nlocal all @broken md5\n";
    let errors = HbaRules::parse(bad, &dir.0, "f").expect_err("invalid");
    let missing = dir.0.join("missing");
    let missing = format!(
        "f:1: could not read included file \"{}\": ",
        missing.display()
    );
    assert!(errors[0].starts_with(&missing), "{}", errors[0]);
    assert_eq!(errors[1], "f:2: @loop: includes nest deeper than 10 levels");
    let broken = dir.0.join("broken");
    let broken = format!("f:3: {}:2: unterminated quoted string", broken.display());
    assert_eq!(errors[2..], [broken]);
}

#[test]
fn load_names_the_file_and_reads_includes_beside_it() {
    let dir = TempDir::new();
    dir.write("admins", "root");
    let path = dir.write(
        "pg_hba.conf",
        "local all @admins trust\nlocal all all bogus\n",
    );
    let expected = format!(
        "{}:2: invalid authentication method \"bogus\"",
        path.display()
    );
    assert_eq!(HbaRules::load(&path).expect_err("bad line"), [expected]);
    dir.write("pg_hba.conf", "local all @admins trust\n");
    check(
        &HbaRules::load(&path).expect("valid"),
        "local d root => Trust:1",
    );
    let missing = dir.0.join("nope.conf");
    let errors = HbaRules::load(&missing).expect_err("missing");
    assert!(errors[0].starts_with(&format!("{}: could not read file: ", missing.display())));
}

#[test]
fn accepted_options() {
    let text = "hostssl all all all md5 clientcert=verify-ca\n\
                hostssl all all all cert clientcert=verify-full";
    check(&rules(text), "tls ::1 d u => Md5:1");
}

#[test]
fn every_bad_line_is_reported_with_its_number() {
    let text =
        "local all all md5\nlocal all all ident\n\nhost all all x trust\nlocal all \\\nall\n";
    let expected = [
        "hba.conf:2: authentication method \"ident\" is not supported",
        "hba.conf:4: host names are not supported (\"x\"): give an IP address in CIDR notation",
        "hba.conf:5: end of line before authentication method",
    ];
    assert_eq!(errors(text), expected);
}

#[test]
fn error_messages() {
    let cases = [
        "hostx all all all md5 => invalid connection type \"hostx\"",
        "local,host all all md5 => multiple values specified for connection type",
        "local => end of line before database",
        "local all => end of line before role",
        "local all all => end of line before authentication method",
        "local \"all all md5 => unterminated quoted string",
        "host all all => end of line before IP address",
        "host all all all => end of line before authentication method",
        "host all all 127.0.0.1 => end of line before IP mask",
        "host all all ::1 md5 => invalid IP mask \"md5\": write the address as ::1/BITS or follow it with a mask",
        "host all all 127.0.0.1 ::1 md5 => IP address 127.0.0.1 and mask ::1 do not match",
        "host all all 10.0.0.0/33 md5 => invalid CIDR mask in address \"10.0.0.0/33\"",
        "host all all ::/129 md5 => invalid CIDR mask in address \"::/129\"",
        "host all all 10.0.0.0/x md5 => invalid CIDR mask in address \"10.0.0.0/x\"",
        "host all all db.example/24 md5 => invalid IP address \"db.example/24\"",
        "host all all 10.0.0.0/8,::/0 md5 => multiple values specified for IP address",
        "host all all db.example.com md5 => host names are not supported (\"db.example.com\"): give an IP address in CIDR notation",
        "host all all \"all\" md5 => host names are not supported (\"all\"): give an IP address in CIDR notation",
        "host all all samehost md5 => \"samehost\" is not supported: give the network in CIDR notation",
        "host all all samenet md5 => \"samenet\" is not supported: give the network in CIDR notation",
        "local samerole all md5 => \"samerole\" is not supported: pgmux does not know role membership",
        "local samegroup all md5 => \"samegroup\" is not supported: pgmux does not know role membership",
        "local all +admins md5 => \"+admins\": +GROUP is not supported: pgmux does not know role membership",
        "local /^a all md5 => \"/^a\": regular expressions in database and user names are not supported",
        "local all \"/^a\" md5 => \"/^a\": regular expressions in database and user names are not supported",
        "local all all md5,trust => multiple values specified for method",
        "local all all bogus => invalid authentication method \"bogus\"",
        "host all all all peer => peer authentication is only supported on local sockets",
        "host all all all cert => cert authentication is only supported on hostssl connections",
        "local all all cert => cert authentication is only supported on hostssl connections",
        "local all all md5 map=x => option \"map\" is not supported: pgmux has no auth_ident_file",
        "hostssl all all all md5 verbose => authentication option not in name=value format: \"verbose\"",
        "hostssl all all all md5 ldapserver=x => authentication option \"ldapserver\" is not supported",
        "host all all all md5 clientcert=verify-full => clientcert can only be configured on hostssl lines",
        "hostssl all all all md5 clientcert=1 => invalid value for clientcert: \"1\"",
        "hostssl all all all cert clientcert=verify-ca => clientcert only accepts verify-full when using cert authentication",
    ];
    for case in cases {
        let (line, message) = case.split_once(" => ").expect("case");
        assert_eq!(
            errors(&format!("# first\n{line}\n")),
            [format!("hba.conf:2: {message}")]
        );
    }
    for method in ["ident", "gss", "sspi", "ldap", "radius", "pam", "bsd"] {
        let expected = format!("hba.conf:1: authentication method \"{method}\" is not supported");
        assert_eq!(errors(&format!("host all all all {method}")), [expected]);
    }
}

#[test]
fn realistic_file() {
    let text = "# TYPE  DATABASE  USER     ADDRESS      METHOD\n\
                local   all       all                   trust\n\
                host    all       mallory  all          reject\n\
                host    all       app      10.0.0.0/8   scram-sha-256\n\
                host    all       app      all          reject\n\
                host    all       legacy   all          md5\n";
    check(
        &rules(text),
        "local db mallory => Trust:2; 10.0.0.5 db mallory => Reject:3
         tls 10.9.8.7 db app => ScramSha256:4; ::ffff:10.1.1.1 db app => ScramSha256:4
         192.0.2.1 db app => Reject:5; 2001:db8::1 db legacy => Md5:6
         2001:db8::1 db stranger => none",
    );
}
