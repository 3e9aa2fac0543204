# Least privilege: SIP and RTP only from sip_client_cidrs (and between Warden
# nodes), the admin API only through the ALB, PostgreSQL and Redis only from
# Warden. The Network Load Balancer keeps the client's address, so the Warden
# rules name the clients, and its health checks come from inside the VPC.
locals {
  # One rule per SIP transport and client range.
  sip_client_rules = {
    for pair in setproduct(keys(local.sip_protocols), var.sip_client_cidrs) :
    "${pair[0]}-${pair[1]}" => { protocol = pair[0], cidr = pair[1] }
  }
}

resource "aws_security_group" "warden" {
  name        = "${var.name}-warden"
  description = "Warden instances"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group_rule" "warden_sip" {
  for_each          = local.sip_client_rules
  type              = "ingress"
  security_group_id = aws_security_group.warden.id
  description       = "SIP over ${upper(each.value.protocol)} from phones and trunks"
  protocol          = each.value.protocol
  from_port         = local.sip_port
  to_port           = local.sip_port
  cidr_blocks       = [each.value.cidr]
}

resource "aws_security_group_rule" "warden_rtp" {
  for_each          = toset(var.sip_client_cidrs)
  type              = "ingress"
  security_group_id = aws_security_group.warden.id
  description       = "RTP and RTCP to the media relay ([media] port_min..port_max)"
  protocol          = "udp"
  from_port         = local.media_port_min
  to_port           = local.media_port_max
  cidr_blocks       = [each.value]
}

resource "aws_security_group_rule" "warden_sip_from_nodes" {
  for_each                 = local.sip_protocols
  type                     = "ingress"
  security_group_id        = aws_security_group.warden.id
  description              = "SIP over ${each.value} between Warden nodes (calls through the node holding a flow)"
  protocol                 = each.key
  from_port                = local.sip_port
  to_port                  = local.sip_port
  source_security_group_id = aws_security_group.warden.id
}

resource "aws_security_group_rule" "warden_health_checks" {
  type              = "ingress"
  security_group_id = aws_security_group.warden.id
  description       = "NLB health checks on /healthz ([admin] metrics_listen)"
  protocol          = "tcp"
  from_port         = local.metrics_port
  to_port           = local.metrics_port
  cidr_blocks       = [var.vpc_cidr]
}

resource "aws_security_group_rule" "warden_sip_from_tls_listener" {
  count             = var.sip_tls_certificate_arn == "" ? 0 : 1
  type              = "ingress"
  security_group_id = aws_security_group.warden.id
  description       = "SIP over TCP from the NLB's own addresses (TLS listener)"
  protocol          = "tcp"
  from_port         = local.sip_port
  to_port           = local.sip_port
  cidr_blocks       = [var.vpc_cidr]
}

resource "aws_security_group_rule" "warden_admin_from_alb" {
  type                     = "ingress"
  security_group_id        = aws_security_group.warden.id
  description              = "Admin API (HTTPS) from the ALB"
  protocol                 = "tcp"
  from_port                = local.admin_port
  to_port                  = local.admin_port
  source_security_group_id = aws_security_group.alb.id
}

resource "aws_security_group_rule" "warden_to_phones" {
  for_each          = toset(var.sip_client_cidrs)
  type              = "egress"
  security_group_id = aws_security_group.warden.id
  description       = "SIP and RTP to phones and trunks (on the ports they name)"
  protocol          = "udp"
  from_port         = 1024
  to_port           = 65535
  cidr_blocks       = [each.value]
}

resource "aws_security_group_rule" "warden_to_phones_tcp" {
  for_each          = toset(var.sip_client_cidrs)
  type              = "egress"
  security_group_id = aws_security_group.warden.id
  description       = "SIP over TCP to phones and trunks"
  protocol          = "tcp"
  from_port         = local.sip_port
  to_port           = local.sip_port
  cidr_blocks       = [each.value]
}

resource "aws_security_group_rule" "warden_sip_to_nodes" {
  for_each                 = local.sip_protocols
  type                     = "egress"
  security_group_id        = aws_security_group.warden.id
  description              = "SIP over ${each.value} to the other Warden nodes"
  protocol                 = each.key
  from_port                = local.sip_port
  to_port                  = local.sip_port
  source_security_group_id = aws_security_group.warden.id
}

resource "aws_security_group_rule" "warden_to_database" {
  type                     = "egress"
  security_group_id        = aws_security_group.warden.id
  description              = "PostgreSQL"
  protocol                 = "tcp"
  from_port                = 5432
  to_port                  = 5432
  source_security_group_id = aws_security_group.database.id
}

resource "aws_security_group_rule" "warden_to_redis" {
  type                     = "egress"
  security_group_id        = aws_security_group.warden.id
  description              = "Redis"
  protocol                 = "tcp"
  from_port                = 6379
  to_port                  = 6379
  source_security_group_id = aws_security_group.redis.id
}

resource "aws_security_group_rule" "warden_to_dns" {
  type              = "egress"
  security_group_id = aws_security_group.warden.id
  description       = "DNS (the VPC resolver)"
  protocol          = "udp"
  from_port         = 53
  to_port           = 53
  cidr_blocks       = [var.vpc_cidr]
}

resource "aws_security_group_rule" "warden_to_https" {
  type              = "egress"
  security_group_id = aws_security_group.warden.id
  description       = "HTTPS: AWS APIs (S3, Secrets Manager, SSM), Debian and PyPI packages at boot"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_security_group_rule" "warden_to_http" {
  type              = "egress"
  security_group_id = aws_security_group.warden.id
  description       = "HTTP: Debian's package mirrors (signed packages) at boot"
  protocol          = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_security_group" "alb" {
  name        = "${var.name}-admin-alb"
  description = "Admin API load balancer"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group_rule" "alb_https" {
  for_each          = toset(var.admin_client_cidrs)
  type              = "ingress"
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from administrators"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_blocks       = [each.value]
}

resource "aws_security_group_rule" "alb_to_warden" {
  type                     = "egress"
  security_group_id        = aws_security_group.alb.id
  description              = "Admin API on the Warden instances"
  protocol                 = "tcp"
  from_port                = local.admin_port
  to_port                  = local.admin_port
  source_security_group_id = aws_security_group.warden.id
}

resource "aws_security_group" "database" {
  name        = "${var.name}-database"
  description = "PostgreSQL"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group_rule" "database_from_warden" {
  type                     = "ingress"
  security_group_id        = aws_security_group.database.id
  description              = "PostgreSQL from Warden"
  protocol                 = "tcp"
  from_port                = 5432
  to_port                  = 5432
  source_security_group_id = aws_security_group.warden.id
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "Redis"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group_rule" "redis_from_warden" {
  type                     = "ingress"
  security_group_id        = aws_security_group.redis.id
  description              = "Redis from Warden"
  protocol                 = "tcp"
  from_port                = 6379
  to_port                  = 6379
  source_security_group_id = aws_security_group.warden.id
}
