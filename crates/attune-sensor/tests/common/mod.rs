//! What the sensor service's tests share: a stand-in API and a pack of shell sensors.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

/// A stand-in API whose every answer is "no rules" (the service asks for the
/// rules of each sensor's trigger types); returns its base URL.
pub fn no_rules_api() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = r#"{"items":[],"pagination":{"has_next":false}}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Pack `p` in `dir/vol` with shell sensors `p.<name>` for each of `names`,
/// all running `script`.
pub fn sensors(dir: &Path, names: &[&str], script: &str) {
    let pack = dir.join("vol/p");
    std::fs::create_dir_all(pack.join("sensors")).unwrap();
    std::fs::create_dir_all(dir.join("dev")).unwrap();
    std::fs::write(pack.join("pack.yaml"), "ref: p\nlabel: P\nversion: 1.0.0\n").unwrap();
    std::fs::write(pack.join("sensors/s.sh"), script).unwrap();
    for name in names {
        std::fs::write(
            pack.join(format!("sensors/{name}.yaml")),
            format!(
                "ref: p.{name}\nlabel: {name}\nrunner_type: shell\nentry_point: s.sh\ntrigger_types: [p.t]\n"
            ),
        )
        .unwrap();
    }
}
