//! The ingest service as its clients see it: HTTP in, events through a real NATS JetStream,
//! the projection on SQLite and PostgreSQL.

mod common;

use common::*;
use provenant_bus::{BusConfig, Consumer};
use provenant_test_support::Backend;
use serde_json::{Value, json};

fn fortunes() -> Value {
    json!({ "name": "English fortunes", "description": "fortune(6) cookies", "tags": ["fortunes", "en"], "licence": "CC0-1.0" })
}

#[tokio::test]
async fn a_created_datanet_is_durable_before_the_answer_and_then_readable() {
    for backend in Backend::ALL {
        let app = spawn_app(backend).await;
        let (status, body) = app.post("/v1/datanets", &fortunes()).await;
        assert_eq!(status, 202, "{body}");
        let id = body["datanet_id"].as_str().expect("id").to_owned();
        assert!(body["version"].as_u64().expect("version") >= 1);

        let datanet = app.get_until(&format!("/v1/datanets/{id}"), |status, _| status == 200).await;
        assert_eq!(datanet["name"], "English fortunes");
        assert_eq!(datanet["owner_id"], "alice");
        assert_eq!(datanet["tags"], json!(["fortunes", "en"]));
        assert_eq!(datanet["licence"], "CC0-1.0");
        assert_eq!(datanet["record_format"], "plain_text");
        let (_, listed) = app.get("/v1/datanets?limit=10").await;
        assert_eq!(listed["datanets"][0]["id"], id.as_str());
        let (_, database) = app.stop().await;
        database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_stable_code_and_never_a_5xx() {
    let app = spawn_app(Backend::Sqlite).await;
    let url = format!("{}/v1/datanets", app.base_url);
    let raw = app.http.post(&url).header("content-type", "application/json").body("{not json").send().await.expect("request");
    assert_eq!(raw.status().as_u16(), 400);
    assert_eq!(raw.json::<Value>().await.expect("json")["error"]["code"], "request.malformed_json");
    let no_type = app.http.post(&url).body("{}").send().await.expect("request");
    assert_eq!(no_type.status().as_u16(), 415);

    let mut unknown_field = fortunes();
    unknown_field["colour"] = json!("blue");
    let cases = [
        (json!({ "name": "", "licence": "MIT" }), 422, "datanet.name_invalid"),
        (json!({ "name": "x", "licence": "not spdx" }), 422, "datanet.licence_invalid"),
        (json!({ "name": "x", "licence": "MIT", "record_format": "json_lines" }), 422, "datanet.json_schema_required"),
        (json!({ "name": "x", "licence": "MIT", "visibility": "secret" }), 422, "request.invalid_body"),
        (json!({ "name": "x" }), 422, "request.invalid_body"),
        (json!({ "owner_id": "mallory", "name": "x", "licence": "MIT" }), 422, "request.invalid_body"),
        (unknown_field, 422, "request.invalid_body"),
        (json!([1, 2]), 422, "request.invalid_body"),
    ];
    for (body, status, code) in cases {
        let (actual_status, answer) = app.post("/v1/datanets", &body).await;
        assert_eq!((actual_status, answer["error"]["code"].as_str()), (status, Some(code)), "{body} -> {answer}");
    }
    for (path, status, code) in [
        ("/v1/datanets/unknown-id", 404, "datanet.not_found"),
        ("/v1/datanets?limit=0", 400, "request.invalid_limit"),
        ("/v1/datanets?limit=many", 400, "request.invalid_query"),
        ("/v2/nothing", 404, "route.not_found"),
    ] {
        let (actual_status, answer) = app.get(path).await;
        assert_eq!((actual_status, answer["error"]["code"].as_str()), (status, Some(code)), "{path} -> {answer}");
    }
    let update = app.http.put(format!("{url}/no.such")).json(&json!({ "name": "x", "licence": "MIT" })).send().await.expect("request");
    assert_eq!(update.status().as_u16(), 404);
    app.stop().await;
}

#[tokio::test]
async fn two_updates_from_the_same_version_one_wins_and_the_other_gets_409() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, created) = app.post("/v1/datanets", &fortunes()).await;
    let id = created["datanet_id"].as_str().expect("id").to_owned();
    let version = created["version"].as_u64().expect("version");
    // Updates check ownership against the read model, so let it catch up first.
    app.get_until(&format!("/v1/datanets/{id}"), |status, _| status == 200).await;
    let url = format!("{}/v1/datanets/{id}", app.base_url);
    let update = |name: &'static str| {
        app.http.put(&url).header("if-match", version.to_string()).json(&json!({ "name": name, "licence": "CC0-1.0" })).send()
    };
    let (first, second) = tokio::join!(update("renamed by a"), update("renamed by b"));
    let mut statuses = [first.expect("a").status().as_u16(), second.expect("b").status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409]);
    let datanet = app.get_until(&format!("/v1/datanets/{id}"), |status, body| status == 200 && body["name"] != "English fortunes").await;
    assert!(datanet["name"].as_str().expect("name").starts_with("renamed by"));
    app.stop().await;
}

#[tokio::test]
async fn rebuilding_the_datanet_projection_from_the_stream_gives_the_same_rows_as_live() {
    for backend in Backend::ALL {
        let app = spawn_app(backend).await;
        let mut ids = Vec::new();
        for index in 0..12 {
            let mut body = fortunes();
            body["name"] = json!(format!("Datanet {index}"));
            let (status, created) = app.post("/v1/datanets", &body).await;
            assert_eq!(status, 202);
            ids.push(created["datanet_id"].as_str().expect("id").to_owned());
        }
        let renamed = &ids[0];
        app.get_until(&format!("/v1/datanets/{renamed}"), |status, _| status == 200).await;
        let url = format!("{}/v1/datanets/{renamed}", app.base_url);
        let response = app.http.put(&url).json(&json!({ "name": "Renamed", "licence": "MIT", "tags": ["x"] })).send().await.expect("put");
        assert_eq!(response.status().as_u16(), 202);
        app.get_until("/v1/datanets?limit=500", |_, body| {
            body["datanets"].as_array().is_some_and(|rows| rows.len() == 12 && rows.iter().any(|row| row["name"] == "Renamed"))
        })
        .await;
        let (config, live_database) = app.stop().await;

        let rebuilt_database = live_database.sibling().await.expect("fresh database");
        let rebuilt = provenant_bus::store::connect(&rebuilt_database.url).await.expect("connects");
        {
            use sea_orm_migration::MigratorTrait as _;
            ingest_migration::Migrator::up(&rebuilt, None).await.expect("migrates");
        }
        let bus = provenant_bus::Bus::connect(&config.bus).await.expect("bus");
        let replay = Consumer::new(bus, rebuilt.clone(), ingest::handlers::DatanetProjector::new(), config.consumer.clone())
            .replay()
            .await
            .expect("replays");
        assert_eq!(replay.stats.applied, 13);

        let live = provenant_bus::store::connect(&live_database.url).await.expect("connects");
        let live_rows = ingest::projections::datanets::list(&live, None, 500).await.expect("live rows");
        let rebuilt_rows = ingest::projections::datanets::list(&rebuilt, None, 500).await.expect("rebuilt rows");
        assert_eq!(live_rows.len(), 12);
        assert_eq!(rebuilt_rows, live_rows);
        live.close().await.expect("close");
        rebuilt.close().await.expect("close");
        live_database.drop_database().await.expect("drop");
        rebuilt_database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn a_second_creation_from_another_producer_is_dead_lettered_and_changes_nothing() {
    for backend in Backend::ALL {
        let app = spawn_app(backend).await;
        let (_, created) = app.post("/v1/datanets", &fortunes()).await;
        let id = created["datanet_id"].as_str().expect("id").to_owned();
        app.get_until(&format!("/v1/datanets/{id}"), |status, _| status == 200).await;

        // Another producer ignores the expected-sequence check and creates the same Datanet.
        let bus = provenant_bus::Bus::connect(&BusConfig { producer: "rogue".into(), ..app.config.bus.clone() }).await.expect("bus");
        let rogue = provenant_events::proto::datanet::v1::DatanetCreated {
            datanet_id: id.clone(),
            owner: Some(provenant_events::proto::common::v1::Principal { id: "mallory".into(), kind: 2 }),
            spec: Some(provenant_events::proto::datanet::v1::DatanetSpec {
                name: "Hijacked".into(),
                licence_spdx: "MIT".into(),
                record_format: 1,
                visibility: 1,
                contribution_policy: 1,
                ..Default::default()
            }),
        };
        let envelope = provenant_bus::Envelope::new(&rogue, "rogue");
        bus.publish(&envelope, &rogue, provenant_bus::Expect::Any).await.expect("stored in the log");
        let (_, fresh) = app.post("/v1/datanets", &fortunes()).await;
        let fresh_id = fresh["datanet_id"].as_str().expect("id").to_owned();
        app.get_until(&format!("/v1/datanets/{fresh_id}"), |status, _| status == 200).await;

        let (_, datanet) = app.get(&format!("/v1/datanets/{id}")).await;
        assert_eq!((datanet["name"].as_str(), datanet["owner_id"].as_str()), (Some("English fortunes"), Some("alice")));
        let dead = bus
            .jetstream()
            .get_stream(bus.namespace().dead_letter_stream())
            .await
            .expect("dead letters")
            .direct_get_last_for_subject(bus.namespace().dead_letter_subject("ingest-datanets").expect("subject"))
            .await
            .expect("a dead letter");
        let letter = provenant_bus::DeadLetter::from_message(Some(&dead.headers), dead.payload.clone());
        assert_eq!(letter.reason_code, "datanet.already_exists");
        assert_eq!(letter.event_id(), Some(envelope.event_id.to_string().as_str()));
        let (_, database) = app.stop().await;
        database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn callers_are_authenticated_by_api_key_and_only_owners_change_their_datanets() {
    let app = spawn_app(Backend::Sqlite).await;
    let url = format!("{}/v1/datanets", app.base_url);
    let answer = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or(Value::Null)["error"]["code"].as_str().map(str::to_owned))
    };
    let missing = app.anonymous.post(&url).json(&fortunes()).send().await.expect("request");
    assert_eq!(answer(missing).await, (401, Some("auth.missing".into())));
    let wrong = client_with_key("pvk_guessed").get(&url).send().await.expect("request");
    assert_eq!(answer(wrong).await, (401, Some("auth.invalid_key".into())));
    let basic = app.anonymous.get(&url).header("authorization", "Basic YWxpY2U6eA==").send().await.expect("request");
    assert_eq!(answer(basic).await, (401, Some("auth.malformed".into())));
    let not_an_owner = app.bob.post(&url).json(&fortunes()).send().await.expect("request");
    assert_eq!(answer(not_an_owner).await, (403, Some("auth.forbidden".into())));

    let (_, created) = app.post("/v1/datanets", &json!({ "name": "Alice's private set", "licence": "MIT", "visibility": "private" })).await;
    let id = created["datanet_id"].as_str().expect("id").to_owned();
    let datanet = app.get_until(&format!("/v1/datanets/{id}"), |status, _| status == 200).await;
    assert_eq!(datanet["owner_id"], "alice", "the owner is the authenticated caller");
    let hidden = app.bob.get(format!("{url}/{id}")).send().await.expect("request");
    assert_eq!(answer(hidden).await, (404, Some("datanet.not_found".into())), "a private Datanet does not exist for others");
    let (_, listed) = (200, app.bob.get(&url).send().await.expect("request").json::<Value>().await.expect("json"));
    assert!(listed["datanets"].as_array().expect("list").iter().all(|row| row["id"] != id.as_str()));

    let (_, public) = app.post("/v1/datanets", &fortunes()).await;
    let public_id = public["datanet_id"].as_str().expect("id").to_owned();
    app.get_until(&format!("/v1/datanets/{public_id}"), |status, _| status == 200).await;
    let hijack =
        app.bob.put(format!("{url}/{public_id}")).json(&json!({ "name": "mine now", "licence": "MIT" })).send().await.expect("request");
    assert_eq!(answer(hijack).await, (403, Some("auth.not_owner".into())));
    app.stop().await;
}

#[tokio::test]
async fn an_admin_issues_a_key_that_works_at_once_and_revokes_it_everywhere() {
    const ROOT_KEY: &str = "pvk_test_root_admin";
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.identity.api_keys.push(api_key("root", vec![provenant_runtime::identity::Role::Admin], ROOT_KEY));
    })
    .await;
    let root = client_with_key(ROOT_KEY);
    let url = format!("{}/v1/admin/api-keys", app.base_url);

    let refused = app.http.post(&url).json(&json!({ "principal_id": "carol", "roles": ["contributor"] })).send().await.expect("request");
    assert_eq!(refused.status().as_u16(), 403, "only admins issue keys");
    for (body, code) in [
        (json!({ "principal_id": "no spaces", "roles": ["contributor"] }), "api_key.principal_invalid"),
        (json!({ "principal_id": "carol", "roles": [] }), "api_key.roles_missing"),
        (json!({ "principal_id": "carol", "roles": ["superuser"] }), "request.invalid_body"),
    ] {
        let response = root.post(&url).json(&body).send().await.expect("request");
        assert_eq!(response.status().as_u16(), 422, "{body}");
        assert_eq!(response.json::<Value>().await.expect("json")["error"]["code"], code, "{body}");
    }

    let issued: Value = {
        let response =
            root.post(&url).json(&json!({ "principal_id": "carol", "roles": ["datanet_owner"], "label": "carol's laptop" })).send();
        let response = response.await.expect("request");
        assert_eq!(response.status().as_u16(), 201);
        response.json().await.expect("json")
    };
    let key = issued["key"].as_str().expect("key").to_owned();
    let key_id = issued["key_id"].as_str().expect("id").to_owned();
    let carol = client_with_key(&key);
    let created = carol.post(format!("{}/v1/datanets", app.base_url)).json(&fortunes()).send().await.expect("request");
    assert_eq!(created.status().as_u16(), 202, "the new key works right after the answer");
    let datanet_id = created.json::<Value>().await.expect("json")["datanet_id"].as_str().expect("id").to_owned();
    let datanet: Value =
        carol.get(format!("{}/v1/datanets/{datanet_id}", app.base_url)).send().await.expect("get").json().await.expect("json");
    assert_eq!(datanet["owner_id"], "carol");

    let listed: Value = root.get(&url).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed["keys"][0]["key_id"], key_id.as_str());
    assert!(listed.to_string().find(&key).is_none(), "the key is never shown again");

    let revoked = root.delete(format!("{url}/{key_id}")).send().await.expect("revoke");
    assert_eq!(revoked.status().as_u16(), 204);
    let after = carol.get(format!("{}/v1/datanets", app.base_url)).send().await.expect("request");
    assert_eq!(after.status().as_u16(), 401, "a revoked key stops working");
    let again = root.delete(format!("{url}/{key_id}")).send().await.expect("revoke");
    assert_eq!(again.status().as_u16(), 404);

    // A restarted service rebuilds the issued keys from the log: still revoked, and a key
    // issued before the restart still works.
    let second: Value = root
        .post(&url)
        .json(&json!({ "principal_id": "dave", "roles": ["contributor"] }))
        .send()
        .await
        .expect("issue")
        .json()
        .await
        .expect("json");
    let (config, database) = app.stop().await;
    let restarted = ingest::Application::build(config).await.expect("rebuilds");
    let base_url = format!("http://{}", restarted.address());
    let shutdown = provenant_runtime::Shutdown::new();
    let task = tokio::spawn(restarted.run_until_stopped(shutdown.clone()));
    let dave = client_with_key(second["key"].as_str().expect("key"));
    assert_eq!(dave.get(format!("{base_url}/v1/contributions")).send().await.expect("request").status().as_u16(), 200);
    assert_eq!(carol.get(format!("{base_url}/v1/contributions")).send().await.expect("request").status().as_u16(), 401);
    shutdown.cancel();
    task.await.expect("task").expect("stopped cleanly");
    database.drop_database().await.expect("drop");
}
