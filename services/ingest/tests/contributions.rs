//! Contributions through the ingest API: content stored once by hash in the JetStream object
//! store, `ContributionSubmitted` durable before the answer, status from the verdict events.

mod common;

use common::*;
use provenant_bus::{Consumer, Envelope, Expect};
use provenant_events::proto::datanet::v1::{ContributionAccepted, ContributionRejected, RejectionReason};
use provenant_test_support::Backend;
use serde_json::{Value, json};

async fn datanet(app: &TestApp, body: Value) -> String {
    let (status, created) = app.post("/v1/datanets", &body).await;
    assert_eq!(status, 202, "{created}");
    let id = created["datanet_id"].as_str().expect("id").to_owned();
    app.get_until(&format!("/v1/datanets/{id}"), |status, _| status == 200).await;
    id
}

async fn submit(client: &reqwest::Client, app: &TestApp, datanet: &str, content_type: &str, body: &'static str) -> (u16, Value) {
    let response = client
        .post(format!("{}/v1/datanets/{datanet}/contributions", app.base_url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

const FORTUNE: &str = "You will be honoured for contributing your time and skill to a worthy cause.";

/// Every (contributor, day, items, bytes) row of the daily quota totals in `database`, sorted.
async fn daily_usage(database: &provenant_test_support::TestDatabase) -> Vec<(String, String, i64, i64)> {
    use sea_orm::EntityTrait as _;
    let connection = provenant_bus::store::connect(&database.url).await.expect("connects");
    let rows = ingest::projections::daily_usage::Entity::find().all(&connection).await.expect("reads");
    connection.close().await.expect("closes");
    let mut rows: Vec<_> = rows.into_iter().map(|row| (row.contributor_id, row.day, row.items, row.bytes)).collect();
    rows.sort();
    rows
}

/// A new store under a log that is not new (a lost volume): the service fills its read models
/// from the log before it follows it, so the Datanet and the contribution are there again. The
/// durable consumers' positions on the server belong to the store they wrote before, so without
/// filling the new store would only ever see what came after.
#[tokio::test]
async fn a_service_given_a_new_store_fills_it_from_the_log() {
    for backend in Backend::ALL {
        let app = spawn_app(backend).await;
        let datanet_id = datanet(&app, json!({ "name": "Fortunes", "licence": "CC0-1.0" })).await;
        let (status, submitted) = submit(&app.bob, &app, &datanet_id, "text/plain", FORTUNE).await;
        assert_eq!(status, 202, "{submitted}");
        let contribution = format!("/v1/contributions/{}", submitted["contribution_id"].as_str().expect("id"));
        let before = app.get_until(&contribution, |status, _| status == 200).await;
        let (config, lost) = app.stop().await;

        let app = spawn_app_with(backend, |fresh| fresh.bus = config.bus.clone()).await;
        assert_ne!(app.config.database.url.expose(), config.database.url.expose(), "{backend:?}: a new store");
        app.get_until(&format!("/v1/datanets/{datanet_id}"), |status, _| status == 200).await;
        let after = app.get_until(&contribution, |status, _| status == 200).await;
        assert_eq!(after, before, "{backend:?}");
        let (_, filled) = app.stop().await;
        let usage = daily_usage(&filled).await;
        assert_eq!(usage, daily_usage(&lost).await, "{backend:?}: the quota totals are filled from the log too");
        assert_eq!(
            usage.iter().map(|(contributor, _, items, bytes)| (contributor.as_str(), *items, *bytes)).collect::<Vec<_>>(),
            [("bob", 1, FORTUNE.len() as i64)],
            "{backend:?}"
        );
        lost.drop_database().await.expect("drop");
        filled.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn a_submitted_text_is_stored_by_hash_and_pending_until_validation_decides() {
    for backend in Backend::ALL {
        let app = spawn_app(backend).await;
        let datanet_id = datanet(&app, json!({ "name": "Fortunes", "licence": "CC0-1.0" })).await;
        let (status, submitted) = submit(&app.bob, &app, &datanet_id, "text/plain; charset=utf-8", FORTUNE).await;
        assert_eq!(status, 202, "{submitted}");
        assert_eq!(submitted["content_sha256"], provenant_bus::sha256_hex(FORTUNE.as_bytes()));
        assert_eq!((submitted["record_count"].as_u64(), submitted["status"].as_str()), (Some(1), Some("pending")));
        let id = submitted["contribution_id"].as_str().expect("id").to_owned();

        let path = format!("/v1/contributions/{id}");
        // Read-your-writes: the 202 came once the contribution projection had handled the event.
        let bobs_view = app.bob.get(format!("{}{path}", app.base_url)).send().await.expect("get");
        assert_eq!(bobs_view.status(), 200, "a GET right after the 202 finds the contribution");
        let view: Value = bobs_view.json().await.expect("json");
        assert_eq!((view["status"].as_str(), view["contributor_id"].as_str()), (Some("pending"), Some("bob")));
        let (owner_status, _) = app.get(&path).await;
        assert_eq!(owner_status, 200, "the Datanet's owner sees contributions to it");
        let mine: Value = app.bob.get(format!("{}/v1/contributions", app.base_url)).send().await.expect("list").json().await.expect("json");
        assert_eq!(mine["contributions"][0]["id"], id.as_str());

        let bus = provenant_bus::Bus::connect(&app.config.bus).await.expect("bus");
        let stored = bus.blob_store("contributions").await.expect("bucket").get(&provenant_bus::sha256_hex(FORTUNE.as_bytes())).await;
        assert_eq!(stored.expect("read").as_deref(), Some(FORTUNE.as_bytes()), "the content is in the object store");

        // The validate service's verdicts, as events on the contribution's subject.
        let rejected = ContributionRejected {
            contribution_id: id.clone(),
            datanet_id: datanet_id.clone(),
            contributor: None,
            reasons: vec![RejectionReason { code: "quality.too_short".into(), message: "too short".into(), record_index: Some(0) }],
        };
        bus.publish(&Envelope::new(&rejected, "validate"), &rejected, Expect::Any).await.expect("verdict");
        let view = app.get_until(&path, |_, body| body["status"] == "rejected").await;
        assert_eq!(view["reasons"][0]["code"], "quality.too_short");
        assert_eq!(view["reasons"][0]["record_index"], 0);

        let (_, second) =
            submit(&app.bob, &app, &datanet_id, "text/plain", "A second fortune, different from the first one entirely.").await;
        let second_id = second["contribution_id"].as_str().expect("id").to_owned();
        app.get_until(&format!("/v1/contributions/{second_id}"), |status, _| status == 200).await;
        let accepted = ContributionAccepted {
            contribution_id: second_id.clone(),
            datanet_id: datanet_id.clone(),
            quality_score_ppm: 912_000,
            duplicate_cluster_id: "cluster-1".into(),
            cluster_founder: true,
            flags: vec!["personal_data.email".into()],
            ..Default::default()
        };
        bus.publish(&Envelope::new(&accepted, "validate"), &accepted, Expect::Any).await.expect("verdict");
        let view = app.get_until(&format!("/v1/contributions/{second_id}"), |_, body| body["status"] == "accepted").await;
        assert_eq!((view["quality_score_ppm"].as_u64(), view["duplicate_cluster_id"].as_str()), (Some(912_000), Some("cluster-1")));
        assert_eq!(view["flags"], json!(["personal_data.email"]));
        let (_, database) = app.stop().await;
        database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn a_file_upload_records_its_name_and_json_lines_count_their_records() {
    let app = spawn_app(Backend::Sqlite).await;
    let text_datanet = datanet(&app, json!({ "name": "Texts", "licence": "MIT" })).await;
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(FORTUNE.as_bytes().to_vec()).file_name("fortune.txt"));
    let response =
        app.bob.post(format!("{}/v1/datanets/{text_datanet}/contributions", app.base_url)).multipart(form).send().await.expect("upload");
    assert_eq!(response.status().as_u16(), 202);
    let id = response.json::<Value>().await.expect("json")["contribution_id"].as_str().expect("id").to_owned();
    let view = app.get_until(&format!("/v1/contributions/{id}"), |status, _| status == 200).await;
    assert_eq!(view["file_name"], "fortune.txt");

    let schema = json!({ "type": "object", "required": ["text"] });
    let jsonl_datanet =
        datanet(&app, json!({ "name": "Records", "licence": "MIT", "record_format": "json_lines", "json_schema": schema })).await;
    let (status, submitted) =
        submit(&app.bob, &app, &jsonl_datanet, "application/x-ndjson", "{\"text\":\"one\"}\n\n{\"text\":\"two\"}\n").await;
    assert_eq!((status, submitted["record_count"].as_u64()), (202, Some(2)));
    app.stop().await;
}

#[tokio::test]
async fn bad_submissions_get_a_4xx_with_a_stable_code() {
    let app = spawn_app(Backend::Sqlite).await;
    let datanet_id = datanet(&app, json!({ "name": "Fortunes", "licence": "CC0-1.0" })).await;
    let cases = [
        ("application/pdf", "%PDF-1.7", 415, "contribution.unsupported_media_type"),
        ("application/x-ndjson", "{\"text\":\"x\"}", 415, "contribution.format_mismatch"),
        ("text/plain", "   \n\t ", 422, "contribution.empty"),
    ];
    for (content_type, body, status, code) in cases {
        let (actual, answer) = submit(&app.bob, &app, &datanet_id, content_type, body).await;
        assert_eq!((actual, answer["error"]["code"].as_str()), (status, Some(code)), "{content_type}");
    }
    let url = format!("{}/v1/datanets/{datanet_id}/contributions", app.base_url);
    let huge = app.bob.post(&url).header("content-type", "text/plain").body("x".repeat(65 * 1024)).send().await.expect("request");
    assert_eq!(huge.status().as_u16(), 413);
    assert_eq!(huge.json::<Value>().await.expect("json")["error"]["code"], "contribution.too_large");
    let exe = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(b"MZ".to_vec()).file_name("tool.exe"));
    let exe = app.bob.post(&url).multipart(exe).send().await.expect("request");
    assert_eq!(exe.status().as_u16(), 415);
    let no_file = reqwest::multipart::Form::new().text("note", "hello");
    let no_file = app.bob.post(&url).multipart(no_file).send().await.expect("request");
    assert_eq!(no_file.status().as_u16(), 400);
    let unknown = app
        .bob
        .post(format!("{}/v1/datanets/nope/contributions", app.base_url))
        .header("content-type", "text/plain")
        .body(FORTUNE)
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status().as_u16(), 404);
    let anonymous = app.anonymous.post(&url).header("content-type", "text/plain").body(FORTUNE).send().await.expect("request");
    assert_eq!(anonymous.status().as_u16(), 401);
    let (status, _) = app.get("/v1/contributions/not-a-contribution").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn daily_quotas_answer_429_and_statistics_count_what_was_decided() {
    for backend in Backend::ALL {
        // PostgreSQL sums BIGINT as NUMERIC: the quota query must work on both.
        let app = spawn_app_with(backend, |config| config.contributions.daily_items_per_contributor = 3).await;
        let datanet_id = datanet(&app, json!({ "name": "Fortunes", "licence": "CC0-1.0" })).await;
        let texts: [&'static str; 3] = [
            "Fortune one: a kind word costs nothing and is worth a great deal.",
            "Fortune two: the harder you work, the luckier you seem to get.",
            "Fortune three: when in doubt, take the scenic route home tonight.",
        ];
        let mut ids = Vec::new();
        for text in texts {
            let (status, submitted) = submit(&app.bob, &app, &datanet_id, "text/plain", text).await;
            assert_eq!(status, 202);
            let id = submitted["contribution_id"].as_str().expect("id").to_owned();
            app.get_until(&format!("/v1/contributions/{id}"), |status, _| status == 200).await;
            ids.push(id);
        }
        let (status, answer) = submit(&app.bob, &app, &datanet_id, "text/plain", "Fortune four: one too many for today, it seems.").await;
        assert_eq!((status, answer["error"]["code"].as_str()), (429, Some("quota.daily_items_exceeded")));
        let (status, _) = submit(&app.http, &app, &datanet_id, "text/plain", "Alice has her own quota, untouched by bob's.").await;
        assert_eq!(status, 202, "quotas are per contributor");

        let bus = provenant_bus::Bus::connect(&app.config.bus).await.expect("bus");
        let accepted = ContributionAccepted {
            contribution_id: ids[0].clone(),
            datanet_id: datanet_id.clone(),
            quality_score_ppm: 900_000,
            duplicate_cluster_id: ids[0].clone(),
            cluster_founder: true,
            ..Default::default()
        };
        bus.publish(&Envelope::new(&accepted, "validate"), &accepted, Expect::Any).await.expect("verdict");
        let stats = app.get_until(&format!("/v1/datanets/{datanet_id}/stats"), |status, body| status == 200 && body["accepted"] == 1).await;
        assert_eq!((stats["pending"].as_u64(), stats["contributors"].as_u64()), (Some(3), Some(2)));
        assert_eq!((stats["records_accepted"].as_u64(), stats["duplicate_clusters"].as_u64()), (Some(1), Some(1)));
        assert_eq!(stats["bytes_accepted"].as_u64(), Some(texts[0].len() as u64));
        let (_, database) = app.stop().await;
        // The quota reads running totals per contributor and UTC day, which the projection
        // keeps with each submission: bob's three (the refused fourth is not counted), alice's one.
        let totals: Vec<(String, i64, i64)> =
            daily_usage(&database).await.into_iter().map(|(contributor, _, items, bytes)| (contributor, items, bytes)).collect();
        let bobs_bytes = texts.iter().map(|text| text.len() as i64).sum();
        assert_eq!(totals, [("alice".to_owned(), 1, 44), ("bob".to_owned(), 3, bobs_bytes)], "{backend:?}");
        database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn an_owner_approval_datanet_holds_contributions_until_its_owner_reviews_them() {
    let app = spawn_app(Backend::Sqlite).await;
    let datanet_id = datanet(&app, json!({ "name": "Curated", "licence": "MIT", "contribution_policy": "owner_approval" })).await;
    let mut ids = Vec::new();
    for text in ["A curated fortune, waiting for its reviewer.", "Another curated fortune, also waiting patiently."] {
        let (_, submitted) = submit(&app.bob, &app, &datanet_id, "text/plain", text).await;
        let id = submitted["contribution_id"].as_str().expect("id").to_owned();
        let view = app.get_until(&format!("/v1/contributions/{id}"), |status, _| status == 200).await;
        assert_eq!(view["status"], "awaiting_approval");
        ids.push(id);
    }
    let review = |client: &reqwest::Client, id: &str, body: Value| {
        client.post(format!("{}/v1/contributions/{id}/review", app.base_url)).json(&body).send()
    };
    let by_contributor = review(&app.bob, &ids[0], json!({ "decision": "approve" })).await.expect("request");
    assert_eq!(by_contributor.status().as_u16(), 403, "contributors do not approve their own work");
    let approved = review(&app.http, &ids[0], json!({ "decision": "approve" })).await.expect("request");
    assert_eq!(approved.status().as_u16(), 202);
    app.get_until(&format!("/v1/contributions/{}", ids[0]), |_, body| body["status"] == "pending").await;
    let again = review(&app.http, &ids[0], json!({ "decision": "reject" })).await.expect("request");
    assert_eq!(again.status().as_u16(), 409);
    let rejected = review(&app.http, &ids[1], json!({ "decision": "reject", "reason": "off topic" })).await.expect("request");
    assert_eq!(rejected.status().as_u16(), 202);
    let view = app.get_until(&format!("/v1/contributions/{}", ids[1]), |_, body| body["status"] == "rejected").await;
    assert_eq!((view["reasons"][0]["code"].as_str(), view["reasons"][0]["message"].as_str()), (Some("owner.rejected"), Some("off topic")));
    let nonsense = review(&app.http, &ids[1], json!({ "decision": "maybe" })).await.expect("request");
    assert_eq!(nonsense.status().as_u16(), 422);
    app.stop().await;
}

/// The contribution projection writes a batch at a time: replaying the log into a fresh
/// database (submissions and their verdicts in the same batches) gives the live rows, and a
/// second submission of one contribution id, or a verdict on a contribution nobody submitted,
/// is refused whether it comes in a batch or alone.
#[tokio::test]
async fn rebuilding_the_contribution_projection_from_the_stream_gives_the_same_rows_as_live() {
    for backend in Backend::ALL {
        let app = spawn_app(backend).await;
        let datanet_id = datanet(&app, json!({ "name": "Fortunes", "licence": "CC0-1.0" })).await;
        let texts = [
            "The first fortune of six, long enough to pass.",
            "The second fortune of six, also long enough.",
            "The third fortune of six, in plain words here.",
            "The fourth fortune of six, quite unlike the rest.",
            "The fifth fortune of six, nearly at the end now.",
            "The sixth fortune of six, the last one of them.",
        ];
        let mut ids = Vec::new();
        for text in texts {
            let (status, submitted) = submit(&app.bob, &app, &datanet_id, "text/plain", text).await;
            assert_eq!(status, 202, "{submitted}");
            ids.push(submitted["contribution_id"].as_str().expect("id").to_owned());
        }
        let bus = provenant_bus::Bus::connect(&app.config.bus).await.expect("bus");
        for (index, id) in ids.iter().enumerate().take(4) {
            let accepted = ContributionAccepted {
                contribution_id: id.clone(),
                datanet_id: datanet_id.clone(),
                quality_score_ppm: 900_000 + u32::try_from(index).expect("small"),
                duplicate_cluster_id: format!("cluster-{index}"),
                cluster_founder: true,
                ..Default::default()
            };
            bus.publish(&Envelope::new(&accepted, "validate"), &accepted, Expect::Any).await.expect("verdict");
        }
        let rejected = ContributionRejected {
            contribution_id: ids[4].clone(),
            datanet_id: datanet_id.clone(),
            contributor: None,
            reasons: vec![RejectionReason { code: "quality.too_short".into(), message: "too short".into(), record_index: None }],
        };
        bus.publish(&Envelope::new(&rejected, "validate"), &rejected, Expect::Any).await.expect("verdict");
        // A verdict on a contribution nobody submitted.
        let stray =
            ContributionAccepted { contribution_id: "no-such-contribution".into(), datanet_id: datanet_id.clone(), ..Default::default() };
        bus.publish(&Envelope::new(&stray, "validate"), &stray, Expect::Any).await.expect("verdict");
        app.get_until(&format!("/v1/contributions/{}", ids[4]), |_, body| body["status"] == "rejected").await;
        app.get_until(&format!("/v1/contributions/{}", ids[3]), |_, body| body["status"] == "accepted").await;
        let (config, live_database) = app.stop().await;
        // A second submission of the first contribution's id (another event): after the
        // service stopped, so that it reaches the projection in the replay only.
        let live = provenant_bus::store::connect(&live_database.url).await.expect("connects");
        let first = ingest::projections::contributions::find(&live, &ids[0]).await.expect("read").expect("live row");
        let again = provenant_events::proto::datanet::v1::ContributionSubmitted {
            contribution_id: ids[0].clone(),
            datanet_id: datanet_id.clone(),
            contributor: Some(provenant_events::proto::common::v1::Principal { id: "bob".into(), kind: 1 }),
            blob: Some(provenant_events::proto::common::v1::BlobRef {
                sha256: first.content_sha256.clone(),
                size_bytes: 10,
                bucket: "contributions".into(),
                media_type: "text/plain".into(),
            }),
            record_format: provenant_events::proto::datanet::v1::RecordFormat::PlainText.into(),
            record_count: 1,
            ..Default::default()
        };
        bus.publish(&Envelope::new(&again, "ingest"), &again, Expect::Any).await.expect("submitted again");

        let rebuilt_database = live_database.sibling().await.expect("fresh database");
        let rebuilt = provenant_bus::store::connect(&rebuilt_database.url).await.expect("connects");
        {
            use sea_orm_migration::MigratorTrait as _;
            ingest_migration::Migrator::up(&rebuilt, None).await.expect("migrates");
        }
        Consumer::new(bus.clone(), rebuilt.clone(), ingest::handlers::DatanetProjector::new(), config.consumer.clone())
            .replay()
            .await
            .expect("Datanets replayed");
        let replay = Consumer::new(bus, rebuilt.clone(), ingest::handlers::ContributionProjector::new(), config.consumer.clone())
            .replay()
            .await
            .expect("contributions replayed");
        assert_eq!((replay.stats.applied, replay.stats.dead_lettered), (11, 2), "{backend:?}: {:?}", replay.stats);
        let live_rows = rows_of(&live, &ids).await;
        assert_eq!(live_rows.iter().filter(|row| row.status == "accepted").count(), 4);
        // Equal rows include the first contribution's: the second submission changed nothing.
        assert_eq!(rows_of(&rebuilt, &ids).await, live_rows, "{backend:?}");
        live.close().await.expect("close");
        rebuilt.close().await.expect("close");
        live_database.drop_database().await.expect("drop");
        rebuilt_database.drop_database().await.expect("drop");
    }
}

async fn rows_of(database: &sea_orm::DatabaseConnection, ids: &[String]) -> Vec<ingest::projections::contributions::Model> {
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.push(ingest::projections::contributions::find(database, id).await.expect("read").expect("row"));
    }
    rows
}
