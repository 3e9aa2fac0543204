# The Warden instances: an Auto Scaling group (2-10, per the size preset) of
# Debian 12 instances in the private subnets. user-data.sh.tftpl installs the
# wheel from the artifacts bucket into /opt/warden, the systemd units of
# deploy/systemd, and a configuration naming the database, the cache and the
# instance itself, then starts Warden.

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian's cloud team
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

# Warden's wheel: upload it with  aws s3 cp dist/warden-*.whl s3://BUCKET/
resource "aws_s3_bucket" "artifacts" {
  #checkov:skip=CKV_AWS_144:the wheel is rebuilt from source; no replica is needed
  #checkov:skip=CKV2_AWS_62:nothing consumes events of uploaded wheels
  bucket_prefix = "${var.name}-artifacts-"
}

resource "aws_s3_bucket_logging" "artifacts" {
  bucket        = aws_s3_bucket.artifacts.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "artifacts/"
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    id     = "old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# What an instance may do: read the wheel and the database password, decrypt
# them, and be reached through Systems Manager Session Manager (no SSH).
data "aws_iam_policy_document" "instance_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name               = "${var.name}-instance"
  assume_role_policy = data.aws_iam_policy_document.instance_assume.json
}

data "aws_iam_policy_document" "instance" {
  statement {
    sid       = "Wheel"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/${var.warden_wheel_key}"]
  }
  statement {
    sid       = "DatabasePassword"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.database.arn]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "instance" {
  name   = "${var.name}-instance"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance.json
}

resource "aws_iam_role_policy_attachment" "instance_ssm" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "instance" {
  name = "${var.name}-instance"
  role = aws_iam_role.instance.name
}

locals {
  # Every value user-data.sh.tftpl uses (tests/deploy/test_terraform.py checks the two match).
  user_data_vars = {
    region          = var.region
    artifact_bucket = aws_s3_bucket.artifacts.id
    wheel_key       = var.warden_wheel_key
    db_secret_arn   = aws_secretsmanager_secret.database.arn
    db_address      = aws_db_instance.main.address
    redis_address   = aws_elasticache_replication_group.main.primary_endpoint_address
    cluster_name    = var.name
    domains         = jsonencode(var.domains)
    sip_port        = local.sip_port
    media_port_min  = local.media_port_min
    media_port_max  = local.media_port_max
    admin_port      = local.admin_port
    metrics_port    = local.metrics_port
    warden_service  = file("${path.module}/../../systemd/warden.service")
    backup_service  = file("${path.module}/../../systemd/warden-backup.service")
    backup_timer    = file("${path.module}/../../systemd/warden-backup.timer")
    sysusers        = file("${path.module}/../../systemd/warden.sysusers")
    tmpfiles        = file("${path.module}/../../systemd/warden.tmpfiles")
  }
}

resource "aws_launch_template" "warden" {
  name_prefix   = "${var.name}-"
  image_id      = data.aws_ami.debian.id
  instance_type = local.preset.instance_type
  user_data     = base64encode(templatefile("${path.module}/user-data.sh.tftpl", local.user_data_vars))
  iam_instance_profile {
    arn = aws_iam_instance_profile.instance.arn
  }
  vpc_security_group_ids = [aws_security_group.warden.id]
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  monitoring {
    enabled = true
  }
  ebs_optimized = true
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 30
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.main.arn
      delete_on_termination = true
    }
  }
  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-node" }
  }
}

resource "aws_autoscaling_group" "warden" {
  name                      = "${var.name}-nodes"
  min_size                  = local.preset.asg_min
  max_size                  = local.preset.asg_max
  desired_capacity          = local.preset.asg_desired
  vpc_zone_identifier       = aws_subnet.private[*].id
  health_check_type         = "ELB"
  health_check_grace_period = 300
  target_group_arns         = concat([for group in aws_lb_target_group.sip : group.arn], [aws_lb_target_group.admin.arn])
  default_cooldown          = 300
  launch_template {
    id      = aws_launch_template.warden.id
    version = aws_launch_template.warden.latest_version
  }
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }
  tag {
    key                 = "Name"
    value               = "${var.name}-node"
    propagate_at_launch = true
  }
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

# A node being scaled in or replaced stays up for drain_timeout plus margin
# after leaving the load balancers, so calls in progress can end; its shutdown
# then runs warden.service's drain (ExecStop) before Warden exits.
resource "aws_autoscaling_lifecycle_hook" "drain" {
  name                   = "${var.name}-drain"
  autoscaling_group_name = aws_autoscaling_group.warden.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = 120
  default_result         = "CONTINUE"
}
