# Size presets (var.size). docs/DEPLOYMENT.md has a monthly cost note per preset.
locals {
  presets = {
    small = {
      instance_type     = "t3.medium"
      asg_min           = 2
      asg_desired       = 2
      asg_max           = 4
      db_instance_class = "db.t4g.medium"
      db_storage_gb     = 50
      db_max_storage_gb = 200
      cache_node_type   = "cache.t4g.small"
      cache_nodes       = 2
    }
    medium = {
      instance_type     = "c6i.large"
      asg_min           = 2
      asg_desired       = 2
      asg_max           = 6
      db_instance_class = "db.m6g.large"
      db_storage_gb     = 100
      db_max_storage_gb = 500
      cache_node_type   = "cache.m6g.large"
      cache_nodes       = 2
    }
    large = {
      instance_type     = "c6i.xlarge"
      asg_min           = 3
      asg_desired       = 3
      asg_max           = 10
      db_instance_class = "db.r6g.xlarge"
      db_storage_gb     = 200
      db_max_storage_gb = 1000
      cache_node_type   = "cache.r6g.large"
      cache_nodes       = 3
    }
  }
  preset = local.presets[var.size]

  azs             = slice(data.aws_availability_zones.available.names, 0, var.az_count)
  public_subnets  = [for i in range(var.az_count) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_subnets = [for i in range(var.az_count) : cidrsubnet(var.vpc_cidr, 8, 100 + i)]

  # Warden's ports, as the configuration in user-data.sh.tftpl sets them, and
  # its SIP transports ([sip] transports) as load balancer protocols.
  sip_protocols  = { udp = "UDP", tcp = "TCP" }
  sip_port       = 5060
  sip_tls_port   = 5061
  media_port_min = 10000
  media_port_max = 20000
  admin_port     = 8443
  metrics_port   = 9360

  lb_subnets = var.load_balancers_internal ? aws_subnet.private[*].id : aws_subnet.public[*].id
}
