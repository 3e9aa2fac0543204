# PostgreSQL for extensions, call records and admin accounts ([store] url):
# Multi-AZ, encrypted, with automated backups, TLS required (rds.force_ssl;
# Warden connects with sslmode=require). The password is generated here and
# kept in Secrets Manager; instances read it at boot into [store] password_file.
resource "random_password" "database" {
  length  = 32
  special = false
}

resource "aws_secretsmanager_secret" "database" {
  name                    = "${var.name}/database-password"
  description             = "Warden's PostgreSQL password ([store] password_file)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
  #checkov:skip=CKV2_AWS_57:Warden reads the password at start only; a rotation must be followed by restarting the instances (docs/DEPLOYMENT.md), which a rotation Lambda cannot do
}

resource "aws_secretsmanager_secret_version" "database" {
  secret_id     = aws_secretsmanager_secret.database.id
  secret_string = random_password.database.result
}

resource "aws_db_subnet_group" "main" {
  name       = "${var.name}-database"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "main" {
  name   = "${var.name}-postgres15"
  family = "postgres15"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "main" {
  #checkov:skip=CKV_AWS_161:Warden authenticates to PostgreSQL with a password ([store] password_file), not IAM tokens
  identifier                          = "${var.name}-database"
  engine                              = "postgres"
  engine_version                      = "15"
  instance_class                      = local.preset.db_instance_class
  allocated_storage                   = local.preset.db_storage_gb
  max_allocated_storage               = local.preset.db_max_storage_gb
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.main.arn
  db_name                             = "warden"
  username                            = "warden"
  password                            = random_password.database.result
  port                                = 5432
  multi_az                            = true
  db_subnet_group_name                = aws_db_subnet_group.main.name
  vpc_security_group_ids              = [aws_security_group.database.id]
  parameter_group_name                = aws_db_parameter_group.main.name
  publicly_accessible                 = false
  backup_retention_period             = var.backup_retention_days
  backup_window                       = "03:00-04:00"
  maintenance_window                  = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-database-final"
  auto_minor_version_upgrade          = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  monitoring_interval                 = 60
  monitoring_role_arn                 = aws_iam_role.rds_monitoring.arn
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.main.arn
  iam_database_authentication_enabled = false
}
