//! A real S3-compatible endpoint for the tests: moto's server (from the
//! client venv, `scripts/install-clients.sh`) on a free loopback port,
//! killed on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients_python;

pub struct Moto {
    child: Option<Child>,
    port: u16,
}

impl Moto {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut m = Moto { child: None, port };
        m.start_server();
        m
    }

    /// Starts (or starts again, on the same port and with no data) the
    /// server.
    pub fn start_server(&mut self) {
        let child = Command::new(clients_python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (the endpoint is down until [`Moto::start_server`]).
    pub fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard variables that point an S3 client here.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates a bucket (with boto3, a client we did not write), and returns
    /// the keys under `prefix` when asked with [`Moto::keys`].
    pub fn create_bucket(&self, name: &str) {
        self.python(&format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket='{name}')",
            self.endpoint()
        ));
    }

    /// Uploads every file under `dir` to `bucket` under `prefix` (with
    /// boto3), keeping their relative paths.
    pub fn put_dir(&self, bucket: &str, prefix: &str, dir: &std::path::Path) {
        self.python(&format!(
            "import boto3, os\n\
             c = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             root = {:?}\n\
             for d, _, files in os.walk(root):\n    \
                 for f in files:\n        \
                     p = os.path.join(d, f)\n        \
                     c.upload_file(p, '{bucket}', '{prefix}' + os.path.relpath(p, root))",
            self.endpoint(),
            dir.display().to_string()
        ));
    }

    /// The keys in `bucket` under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.python(&format!(
            "import boto3\n\
             c = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             for p in c.get_paginator('list_objects_v2').paginate(Bucket='{bucket}', Prefix='{prefix}'):\n    \
                 [print(o['Key']) for o in p.get('Contents', [])]",
            self.endpoint()
        ));
        let mut keys: Vec<String> = out.lines().map(str::to_string).collect();
        keys.sort();
        keys
    }

    fn python(&self, code: &str) -> String {
        let out = Command::new(clients_python())
            .args(["-c", code])
            .output()
            .expect("run the client venv's python");
        assert!(
            out.status.success(),
            "{code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop_server();
    }
}
