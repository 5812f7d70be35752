//! Creating the table, for the dev gateway and the tests. `template.yaml`
//! declares the same table for AWS; keep the two in step.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use super::keys::{EXPIRES_AT, GSI1, GSI1_PK, GSI1_SK, GSI2, GSI2_PK, GSI2_SK, PK, SK};
use super::{Store, StoreError};

impl Store {
    /// Creates the table (on-demand, `gsi1`, `gsi2`, TTL on `expires_at`) unless it exists.
    pub async fn create_table_if_missing(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("name and type are set")
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .expect("name and type are set")
        };
        // Both indexes project keys only: rewriting a counter, register or
        // balance then writes to an index only when its index keys change.
        let index = |name: &str, pk: &str, sk: &str| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash))
                .key_schema(key(sk, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .expect("index name, keys and projection are set")
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(PK))
            .attribute_definitions(attribute(SK))
            .attribute_definitions(attribute(GSI1_PK))
            .attribute_definitions(attribute(GSI1_SK))
            .attribute_definitions(attribute(GSI2_PK))
            .attribute_definitions(attribute(GSI2_SK))
            .key_schema(key(PK, KeyType::Hash))
            .key_schema(key(SK, KeyType::Range))
            .global_secondary_indexes(index(GSI1, GSI1_PK, GSI1_SK))
            .global_secondary_indexes(index(GSI2, GSI2_PK, GSI2_SK))
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(err) if err.code() == Some("ResourceInUseException") => return Ok(()),
            Err(err) => return Err(StoreError::from_sdk(err)),
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(EXPIRES_AT)
                    .build()
                    .expect("enabled and attribute are set"),
            )
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }
}
