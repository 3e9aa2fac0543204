output "sip_endpoint" {
  description = "The SIP load balancer's DNS name (UDP and TCP 5060; TLS 5061 when configured): point phones or DNS SRV records at it."
  value       = aws_lb.sip.dns_name
}

output "admin_endpoint" {
  description = "The admin API: https://<this>/api/v1 (the ALB's certificate must name it or your CNAME)."
  value       = aws_lb.admin.dns_name
}

output "database_endpoint" {
  description = "PostgreSQL (Multi-AZ), as [store] url names it."
  value       = aws_db_instance.main.address
}

output "database_password_secret" {
  description = "Secrets Manager secret holding the PostgreSQL password."
  value       = aws_secretsmanager_secret.database.arn
}

output "redis_endpoint" {
  description = "Redis primary endpoint, as [state] url names it; it follows a failover."
  value       = aws_elasticache_replication_group.main.primary_endpoint_address
}

output "artifacts_bucket" {
  description = "Upload Warden's wheel here (object key: var.warden_wheel_key)."
  value       = aws_s3_bucket.artifacts.id
}

output "autoscaling_group" {
  description = "The Warden nodes' Auto Scaling group."
  value       = aws_autoscaling_group.warden.name
}

output "alarms_topic" {
  description = "SNS topic of the alarms."
  value       = aws_sns_topic.alarms.arn
}
