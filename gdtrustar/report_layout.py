"""The report summary's layout: which finding fields an analyst sees, per resource and action.

Pure data plus its compiler. ``LAYOUT`` has one section per line: ``- Heading | path | fields``
renders the object (or each object of a list) as a block, ``* ...`` renders one line per list
item. Fields are dotted paths (lists on the way are flattened), optionally ``=Label``; ``$REMOTE``
and ``$PROCESS`` are shared groups. Adding a GuardDuty resource family is one more entry here.
A heading's plural (for "… and 180 more port probes") is derived, or given as ``Heading/plural``.
Field paths are wire (camelCase) names: the normaliser has already renamed boto3's PascalCase.
"""

from __future__ import annotations

import re


def _fields(spec: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Compile "path, path=Label, ..." into ((label, keys), ...); labels default to the last key."""
    out = []
    for entry in spec.split(","):
        path, _, label = entry.strip().partition("=")
        if not label:
            words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", path.rsplit(".", 1)[-1]).lower()
            label = words[:1].upper() + words[1:]
        out.append((label, tuple(path.split("."))))
    return tuple(out)


_REMOTE = ("remoteIpDetails.ipAddressV4=Remote IP, remoteIpDetails.ipAddressV6=Remote IPv6, "
           "remoteIpDetails.country.countryName=Country, remoteIpDetails.city.cityName=City, "
           "remoteIpDetails.organization.org=Organization, remoteIpDetails.organization.asnOrg=AS org, "
           "remoteIpDetails.organization.asn=ASN, remoteIpDetails.organization.isp=ISP, "
           "remoteIpDetails.geoLocation.lat=Latitude, remoteIpDetails.geoLocation.lon=Longitude")
_PROCESS = "name, executablePath, executableSha256=Executable SHA-256, pid=PID, user, userId, startTime"
OVERVIEW = _fields(
    "type, accountId=Account, region, partition, id=Finding ID, arn=Finding ARN, createdAt=Created, "
    "updatedAt=Updated, service.eventFirstSeen=First seen, service.eventLastSeen=Last seen, "
    "service.count=Count, service.archived=Archived, resource.resourceType=Resource type, "
    "service.resourceRole=Resource role, service.featureName=Detected by, service.detectorId=Detector ID, "
    "associatedAttackSequenceArn=Attack sequence ARN, service.action.actionType=Action type")
LAYOUT = """
- EC2 instance | resource.instanceDetails | instanceId=Instance ID, instanceType, instanceState,
  imageId=Image ID, imageDescription, platform, launchTime, availabilityZone,
  iamInstanceProfile.arn=Instance profile, outpostArn, tags
- Network interface | resource.instanceDetails.networkInterfaces | networkInterfaceId=ID, vpcId=VPC,
  subnetId=Subnet, privateIpAddress=Private IP, privateIpAddresses.privateIpAddress=Private IPs,
  privateDnsName=Private DNS, publicIp=Public IP, publicDnsName=Public DNS, ipv6Addresses=IPv6,
  securityGroups.groupId=Security groups, securityGroups.groupName=Security group names
- IAM access key | resource.accessKeyDetails | accessKeyId=Access key ID, principalId=Principal ID,
  userName, userType
- S3 bucket | resource.s3BucketDetails | name, arn=ARN, type, createdAt, owner.id=Owner,
  publicAccess.effectivePermission=Public access, defaultServerSideEncryption.encryptionType=Encryption,
  s3ObjectDetails.key=Objects, tags
- EKS cluster | resource.eksClusterDetails | name, arn=ARN, vpcId=VPC, status, createdAt, tags
- Kubernetes user | resource.kubernetesDetails.kubernetesUserDetails | username, uid=UID, groups,
  sessionName, impersonatedUser.username=Impersonated user
- Kubernetes workload | resource.kubernetesDetails.kubernetesWorkloadDetails | name, type, namespace,
  uid=UID, serviceAccountName, hostNetwork, containers.name=Containers, containers.image=Images,
  containers.securityContext.privileged=Privileged
- ECS cluster | resource.ecsClusterDetails | name, arn=ARN, status, tags
- ECS task | resource.ecsClusterDetails.taskDetails | arn=ARN, definitionArn=Definition ARN, version,
  createdAt, startedAt, startedBy, group, launchType, containers.name=Containers, containers.image=Images
- Container | resource.containerDetails | name, id=ID, image, imagePrefix, containerRuntime
- RDS DB instance | resource.rdsDbInstanceDetails | dbInstanceIdentifier=DB instance, dbInstanceArn=ARN,
  dbClusterIdentifier=DB cluster, engine, engineVersion, tags
- RDS DB user | resource.rdsDbUserDetails | user, application, database, ssl=SSL, authMethod
- Lambda function | resource.lambdaDetails | functionName=Name, functionArn=ARN, functionVersion=Version,
  role, description, lastModifiedAt, vpcConfig.vpcId=VPC, tags
* EBS volume | resource.ebsVolumeDetails.scannedVolumeDetails | volumeArn=Volume ARN, deviceName,
  volumeType, volumeSizeInGB=Size (GB), encryptionType, snapshotArn=Snapshot ARN
- AWS API call | service.action.awsApiCallAction | api=API, serviceName=Service, callerType, errorCode,
  userAgent, domainDetails.domain=Domain, remoteAccountDetails.accountId=Remote account,
  affectedResources, $REMOTE
- Network connection | service.action.networkConnectionAction | connectionDirection=Direction, protocol,
  blocked, localIpDetails.ipAddressV4=Local IP, localIpDetails.ipAddressV6=Local IPv6,
  localPortDetails.port=Local port, localPortDetails.portName=Local port name,
  remotePortDetails.port=Remote port, remotePortDetails.portName=Remote port name, $REMOTE
* Port probe | service.action.portProbeAction.portProbeDetails | localPortDetails.port=Local port,
  localPortDetails.portName=Port name, localIpDetails.ipAddressV4=Local IP, $REMOTE
- DNS request | service.action.dnsRequestAction | domain, domainWithSuffix, protocol, blocked,
  vpcOwnerAccountId=VPC owner
- Kubernetes API call | service.action.kubernetesApiCallAction | requestUri=Request URI, verb,
  sourceIPs=Source IPs, userAgent, statusCode, namespace, resource, subresource, resourceName,
  parameters, $REMOTE
- Kubernetes permission check | service.action.kubernetesPermissionCheckedDetails | verb, resource,
  namespace, allowed
- RDS login attempt | service.action.rdsLoginAttemptAction | $REMOTE
* RDS login | service.action.rdsLoginAttemptAction.LoginAttributes | user, application,
  failedLoginAttempts, successfulLoginAttempts
- Process | service.runtimeDetails.process | $PROCESS, namespacePid=Namespace PID, euid=EUID, pwd
* Parent process/parent processes | service.runtimeDetails.process.lineage | name, executablePath, pid=PID,
  namespacePid=Namespace PID, userId, euid=EUID, startTime
- Runtime context | service.runtimeDetails.context | scriptPath, commandLineExample, threatFilePath,
  filePath, fileOperation, relatedFilePaths, libraryPath, ldPreloadValue=LD_PRELOAD, moduleName,
  moduleFilePath, moduleSha256=Module SHA-256, shellHistoryFilePath, mountSource, mountTarget,
  fileSystemType, flags, socketPath, addressFamily, ianaProtocolNumber=IANA protocol, memoryRegions,
  runcBinaryPath, releaseAgentPath, toolName, toolCategory, serviceName, modifiedAt,
  modifyingProcess.name=Modifying process, modifyingProcess.executablePath=Modifying process path,
  modifyingProcess.executableSha256=Modifying process SHA-256, modifyingProcess.pid=Modifying process PID,
  targetProcess.name=Target process, targetProcess.executablePath=Target process path,
  targetProcess.pid=Target process PID
- Malware scan | service.ebsVolumeScanDetails | scanId=Scan ID, scanType, scanStartedAt, scanCompletedAt,
  triggerFindingId=Trigger finding, sources
* Threat | service.ebsVolumeScanDetails.scanDetections.threatDetectedByName.threatNames | name, severity,
  itemCount, filePaths.filePath=Files, filePaths.hash=Hashes, filePaths.volumeArn=Volumes
- Malware scan | service.malwareScanDetails | scanId=Scan ID, scanType, scanCategory, uniqueThreatCount
* Threat | service.malwareScanDetails.threats | name, source, hash, count, itemPaths.nestedItemPath=Paths,
  itemPaths.hash=Hashes
- Attack sequence | service.detection.sequence | uid=UID, description, additionalSequenceTypes
* Sequence indicator | service.detection.sequence.sequenceIndicators | key, title, values
* Signal | service.detection.sequence.signals | name, type, severity, count, firstSeenAt, lastSeenAt,
  signalIndicators.values=Indicators, description, uid=UID
* Actor | service.detection.sequence.actors | id=ID, user.name=User, user.type=User type,
  user.credentialUid=Credential, user.account.uid=Account, session.mfaStatus=MFA, process.name=Process
* Endpoint | service.detection.sequence.endpoints | id=ID, ip=IP, domain, port, location.country=Country,
  location.city=City, autonomousSystem.name=AS, autonomousSystem.number=ASN, connection.direction
* Sequence resource | service.detection.sequence.resources | uid=UID, name, resourceType,
  accountId=Account, region
* Threat intelligence/threat intelligence entries | service.evidence.threatIntelligenceDetails |
  threatListName=Threat list, threatNames, threatFileSha256=File SHA-256
"""


def _sections(layout: str) -> tuple[tuple[str, tuple[str, ...], tuple, bool, str], ...]:
    """Compile ``LAYOUT`` into (heading, path keys, fields, one line per item, plural) rows."""
    text = layout.replace("$REMOTE", _REMOTE).replace("$PROCESS", _PROCESS).replace("\n  ", " ")
    out = []
    for line in text.strip().splitlines():
        names, path, spec = (part.strip() for part in line[1:].split("|"))
        heading, _, plural = names.partition("/")
        out.append((heading, tuple(path.split(".")), _fields(spec), line[0] == "*", plural or _plural(heading)))
    return tuple(out)


_NAMES = frozenset(("Kubernetes", "Lambda"))


def _plural(heading: str) -> str:
    """"Port probe" -> "port probes"; acronyms and names keep their case ("EBS volumes", "S3 buckets")."""
    first = heading.split(" ", 1)[0]
    keep = not first[1:].isalpha() or not first[1:].islower() or first in _NAMES
    noun = heading if keep else heading[:1].lower() + heading[1:]
    return noun + ("es" if noun.endswith("s") else "s")


SECTIONS = _sections(LAYOUT)
