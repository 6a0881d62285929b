//! v2: the file API, black-box, on the e2e server's executor: a binary round trip, `If-Match`,
//! listing, delete, and an escape refused.

mod common;

#[tokio::test]
async fn files_round_trip_and_stay_inside_the_project() {
    let Some(e2e) = common::target("files") else { return };
    let (_, key) = e2e.create_key("files", &["files:read", "files:write"]).await;
    let base = format!("/projects/{}/files", e2e.project);
    let bytes: Vec<u8> = (0..=255).collect();
    let put = |path: &str, body: Vec<u8>, if_match: Option<&str>| {
        let mut request =
            e2e.client.put(e2e.url(&format!("{base}/content?path={path}"))).header("X-API-Key", &key).body(body);
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        e2e.send(request)
    };
    let created = put("e2e-files/all.bin", bytes.clone(), None).await;
    assert_eq!((created.status, created.body["size"].as_u64()), (201, Some(256)), "{}", created.text);
    let etag = format!("\"{}\"", created.body["sha256"].as_str().unwrap());
    let read = e2e
        .client
        .get(e2e.url(&format!("{base}/content?path=e2e-files/all.bin")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(read.bytes().await.unwrap().to_vec(), bytes);
    put(
        "e2e-files/all.bin",
        b"x".to_vec(),
        Some("\"0000000000000000000000000000000000000000000000000000000000000000\""),
    )
    .await
    .assert_error(412, "PRECONDITION_FAILED");
    assert_eq!(put("e2e-files/all.bin", b"x".to_vec(), Some(&etag)).await.status, 200);
    let listed = e2e.get(&format!("{base}?path=e2e-files"), &key).await;
    assert_eq!(listed.body["entries"][0]["name"], "all.bin", "{}", listed.text);
    e2e.get(&format!("{base}/content?path=../../etc/passwd"), &key).await.assert_error(400, "VALIDATION_FAILED");
    let gone = e2e.delete(&format!("{base}?path=e2e-files&recursive=true"), &key).await;
    assert_eq!(gone.status, 204);
    e2e.get(&format!("{base}/content?path=e2e-files/all.bin"), &key).await.assert_error(404, "NOT_FOUND");
}
