//! The Lambda REST-JSON API (`lambda/2015-03-31` in botocore's models).

mod async_config;
mod functions;
mod invoke;
mod permissions;
mod shapes;
mod tags;
mod versions;

use axum::Router;
use axum::routing::{get, post, put};

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/2015-03-31/functions",
            post(functions::create).get(functions::list),
        )
        .route(
            "/2015-03-31/functions/",
            post(functions::create).get(functions::list),
        )
        .route(
            "/2015-03-31/functions/{name}",
            get(functions::get).delete(functions::delete),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(functions::get_configuration).put(functions::update_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            put(functions::update_code),
        )
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::invoke),
        )
        .route(
            "/2015-03-31/functions/{name}/policy",
            post(permissions::add).get(permissions::get),
        )
        .route(
            "/2015-03-31/functions/{name}/policy/{sid}",
            axum::routing::delete(permissions::remove),
        )
        .route(
            "/2015-03-31/functions/{name}/versions",
            post(versions::publish).get(versions::list_versions),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            post(versions::create_alias).get(versions::list_aliases),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(versions::get_alias)
                .put(versions::update_alias)
                .delete(versions::delete_alias),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            put(versions::put_concurrency).delete(versions::delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(versions::get_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            put(versions::put_provisioned)
                .get(versions::get_provisioned)
                .delete(versions::delete_provisioned),
        )
        .route(
            "/2014-11-13/functions/{name}/invoke-async",
            post(invoke::invoke_async),
        )
        .route(
            "/2014-11-13/functions/{name}/invoke-async/",
            post(invoke::invoke_async),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            put(async_config::put)
                .post(async_config::update)
                .get(async_config::get)
                .delete(async_config::delete),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config/list",
            get(async_config::list),
        )
        .route(
            "/2024-08-31/functions/{name}/recursion-config",
            put(async_config::put_recursion).get(async_config::get_recursion),
        )
        .route(
            "/2017-03-31/tags/{arn}",
            post(tags::tag).get(tags::list).delete(tags::untag),
        )
        .route(
            "/2016-08-19/account-settings",
            get(functions::account_settings),
        )
        .route(
            "/2016-08-19/account-settings/",
            get(functions::account_settings),
        )
}
