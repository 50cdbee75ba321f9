//! The private PostgreSQL server and the SMTP receiver work as the demo and
//! the tests use them.

use std::time::Duration;

use switchyard_standins::postgres::Postgres;
use switchyard_standins::smtp::{Reply, SmtpReceiver, Stage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[test]
fn postgres_starts_stops_and_restarts() {
    let mut pg = Postgres::start("chat").expect("postgres starts");
    let url = pg.url();
    let psql = |sql: &str| switchyard_standins::postgres::psql(&url, sql);
    assert_eq!(psql("SELECT current_database()"), "chat");
    psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1)");
    pg.restart().expect("restarts");
    assert_eq!(psql("SELECT count(*) FROM t"), "1");
    let root = pg.root().to_owned();
    drop(pg);
    assert!(!root.exists(), "the cluster's folder is removed");
}

async fn say(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &str,
) -> String {
    w.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        answer.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return answer;
        }
    }
}

#[tokio::test]
async fn the_receiver_keeps_mail_and_answers_as_scripted() {
    let smtp = SmtpReceiver::start().await.unwrap();
    smtp.push(Reply::new(Stage::Rcpt, 550, "5.1.1 no such mailbox"));
    let tcp = tokio::net::TcpStream::connect(smtp.addr()).await.unwrap();
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    let mut greeting = String::new();
    r.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("220"));
    assert!(say(&mut w, &mut r, "EHLO t").await.contains("250 "));
    assert!(
        say(&mut w, &mut r, "MAIL FROM:<a@x.example>")
            .await
            .starts_with("250")
    );
    assert!(
        say(&mut w, &mut r, "RCPT TO:<gone@x.example>")
            .await
            .starts_with("550")
    );
    assert!(
        say(&mut w, &mut r, "RCPT TO:<b@x.example>")
            .await
            .starts_with("250")
    );
    assert!(say(&mut w, &mut r, "DATA").await.starts_with("354"));
    let sent = say(&mut w, &mut r, "Subject: hi\r\n\r\n..dotted\r\n.").await;
    assert!(sent.starts_with("250"), "{sent}");
    assert_eq!(smtp.wait_mails(1, Duration::from_secs(5)).await, 1);
    let mail = &smtp.mails()[0];
    assert_eq!(mail.from, "a@x.example");
    assert_eq!(mail.to, vec!["b@x.example"]);
    assert_eq!(mail.header("subject").as_deref(), Some("hi"));
    assert_eq!(mail.part("text/plain").as_deref(), Some(".dotted\r\n"));
}
