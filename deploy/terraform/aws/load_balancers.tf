# A Network Load Balancer for SIP (UDP and TCP on 5060, TLS on 5061 when a
# certificate is given) and an Application Load Balancer for the HTTPS admin
# API. Both log to the logs bucket. RTP does not pass through them: it goes to
# each instance's own address (docs/DEPLOYMENT.md).

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_145:ELB access logs can only be written to a bucket encrypted with S3-managed keys (SSE-S3), not KMS
  #checkov:skip=CKV_AWS_144:access logs are kept in this region; replicate them with your organisation's log archive
  #checkov:skip=CKV_AWS_18:this bucket holds access logs itself; logging it would log the log writes
  #checkov:skip=CKV2_AWS_62:nothing consumes events of log objects
  bucket_prefix = "${var.name}-lb-logs-"
  force_destroy = false
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = 365
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_elb_service_account" "current" {}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "ApplicationLoadBalancer"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/admin/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }
  statement {
    sid       = "NetworkLoadBalancer"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/sip/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "s3:x-amz-acl"
      values   = ["bucket-owner-full-control"]
    }
  }
  statement {
    sid       = "NetworkLoadBalancerAcl"
    actions   = ["s3:GetBucketAcl"]
    resources = [aws_s3_bucket.logs.arn]
    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }
  }
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs.json
}

resource "aws_lb" "sip" {
  name                             = "${var.name}-sip"
  load_balancer_type               = "network"
  internal                         = var.load_balancers_internal
  subnets                          = local.lb_subnets
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = true
  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "sip"
    enabled = true
  }
  depends_on = [aws_s3_bucket_policy.logs]
}

# Both SIP target groups keep the client's address (phones' NAT detection and
# failed-login blocking need it) and ask /healthz. Not /readyz: it fails on
# every node at once while the database fails over (the store check), and the
# Auto Scaling group, which counts these health checks, would then replace
# every node. A node leaving the group is deregistered before it drains.
resource "aws_lb_target_group" "sip" {
  for_each             = local.sip_protocols
  name                 = "${var.name}-sip-${each.key}"
  port                 = local.sip_port
  protocol             = each.value
  vpc_id               = aws_vpc.main.id
  preserve_client_ip   = true
  deregistration_delay = 60
  health_check {
    protocol            = "HTTP"
    port                = tostring(local.metrics_port)
    path                = "/healthz"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "sip" {
  for_each          = local.sip_protocols
  load_balancer_arn = aws_lb.sip.arn
  port              = local.sip_port
  protocol          = each.value
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.sip[each.key].arn
  }
}

# SIP over TLS: the NLB terminates TLS (TLS 1.2 or later) and passes the SIP
# messages to Warden's TCP listener, which has no TLS transport of its own.
resource "aws_lb_listener" "sip_tls" {
  count             = var.sip_tls_certificate_arn == "" ? 0 : 1
  load_balancer_arn = aws_lb.sip.arn
  port              = local.sip_tls_port
  protocol          = "TLS"
  certificate_arn   = var.sip_tls_certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.sip["tcp"].arn
  }
}

resource "aws_lb" "admin" {
  #checkov:skip=CKV2_AWS_28:the admin API is reachable only from admin_client_cidrs and needs an admin account or a scoped API token; put a WAF in front when the ALB is internet-facing
  name                       = "${var.name}-admin"
  load_balancer_type         = "application"
  internal                   = var.load_balancers_internal
  subnets                    = local.lb_subnets
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "admin"
    enabled = true
  }
  depends_on = [aws_s3_bucket_policy.logs]
}

# Warden's admin listener serves HTTPS with its own certificate (self-signed by
# default); the ALB re-encrypts to it.
resource "aws_lb_target_group" "admin" {
  name                 = "${var.name}-admin"
  port                 = local.admin_port
  protocol             = "HTTPS"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = 30
  health_check {
    protocol            = "HTTPS"
    port                = "traffic-port"
    path                = "/healthz"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "admin" {
  load_balancer_arn = aws_lb.admin.arn
  port              = 443
  protocol          = "HTTPS"
  certificate_arn   = var.admin_certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.admin.arn
  }
}
