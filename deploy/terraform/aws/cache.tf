# Redis for registrations, live calls and node heartbeats ([state] url): a
# primary and replicas across zones with automatic failover, encrypted at rest.
# Warden's Redis client speaks plain TCP without AUTH (its [state] url takes
# redis:// only), so the cache has no in-transit encryption or auth token:
# it is reachable only from the Warden instances' security group in private
# subnets. ElastiCache keeps the primary's name (output redis_endpoint) across
# a failover.
resource "aws_elasticache_subnet_group" "main" {
  name       = "${var.name}-redis"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_elasticache_replication_group" "main" {
  #checkov:skip=CKV_AWS_30:Warden's Redis client has no TLS ([state] url is redis:// or redis+sentinel://); the cache is confined to the Warden security group in private subnets
  #checkov:skip=CKV_AWS_31:ElastiCache accepts an auth token only with in-transit encryption, which Warden's Redis client cannot use
  replication_group_id       = "${var.name}-redis"
  description                = "Warden shared state"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = local.preset.cache_node_type
  num_cache_clusters         = local.preset.cache_nodes
  port                       = 6379
  parameter_group_name       = "default.redis7"
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.main.name
  security_group_ids         = [aws_security_group.redis.id]
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.main.arn
  transit_encryption_enabled = false
  snapshot_retention_limit   = var.backup_retention_days
  snapshot_window            = "02:00-03:00"
  maintenance_window         = "sun:05:30-sun:06:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false
}
